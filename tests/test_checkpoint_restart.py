"""Where a restart runs (services/restart.py): spare hosts of the machine
file, and under Slurm a step without the failed node (services/slurm.py).
Units, without ssh or Slurm: the real runs are in test_checkpoint_hosts.py."""
import subprocess
import types

import pytest

from libdsm_services import cli, job, machinefile, restart, slurm


def test_a_spare_line_gives_no_rank_and_is_listed_as_a_spare(tmp_path):
    path = tmp_path / "m"
    path.write_text("a\nu@b slots=2\nc spare   # takes over\nd spare\n")
    assert [h.target for h in machinefile.parse(str(path))] == ["a", "u@b", "u@b"]
    assert [(h.target, h.lineno) for h in machinefile.spares(str(path))] == [("c", 3), ("d", 4)]
    assert machinefile.parse_line("c spare") == (None, "c", 0)
    with pytest.raises(ValueError, match="whitespace inside an entry"):
        machinefile.parse_line("c spares")
    (tmp_path / "only").write_text("c spare\n")
    with pytest.raises(machinefile.MachineFileError, match="names no host"):
        machinefile.parse(str(tmp_path / "only"))


def test_a_spare_given_with_dash_h_is_parsed_as_in_a_machine_file():
    assert [h.target for h in machinefile.parse_hosts("a,u@b:2,c:spare")] == ["a", "u@b", "u@b"]
    assert [(h.target, h.lineno) for h in machinefile.spares_of("a,c:spare,u@d:spare")] == \
        [("c", None), ("u@d", None)]
    assert machinefile.parse_line("c:spare") == (None, "c", 0)
    with pytest.raises(ValueError, match="-H a,c:spares: .*not a whole number"):
        machinefile.parse_hosts("a,c:spares")
    with pytest.raises(ValueError, match="names no host"):
        machinefile.parse_hosts("c:spare")
    opts = cli.parse_options(["-H", "h1,h2:2,s1:spare", "--restarts", "1", "-m", "prog"])
    assert [h.target for h in opts.hosts] == ["h1", "h2", "h2"]
    assert [h.target for h in opts.restart.spares] == ["s1"]
    assert cli.parse_options(["-n", "2", "-m", "prog"]).restart.spares == []


def test_dsmexec_help_says_how_to_name_a_spare():
    text = " ".join(cli.build_parser().format_help().split())
    assert "host:spare (no rank until a restart moves a lost host's ranks there)" in text
    assert "'host spare' or 'host:spare'" in text


class FakeJob:
    """What Policy reads of a job: its ranks (host, local), failure, log."""

    def __init__(self, targets, failure=None):
        self.ranks = [types.SimpleNamespace(host=machinefile.Host(None, t, i + 1, t),
                                            local=False) for i, t in enumerate(targets)]
        self.failure, self.said = failure, []

    def log(self, message):
        self.said.append(message)


def _rehost(tmp_path, monkeypatch, lines, answer, dash_h=False):
    """Policy._rehost of a job on the machine file `lines` (or with dash_h, on
    -H of them), the hosts in answer answering: (the new machine file's lines,
    what dsmexec said)."""
    path = tmp_path / "machines"
    path.write_text("".join(line + "\n" for line in lines))
    opts = types.SimpleNamespace(machine_file=None if dash_h else str(path), hosts=None)
    monkeypatch.setattr(restart, "answering", lambda hosts, o: {h.target for h in hosts} & answer)
    spares = machinefile.spares_of(",".join(lines)) if dash_h else ()
    policy = restart.Policy(1, spares=spares)
    job = FakeJob([h.target for h in machinefile.parse(str(path))])
    policy._rehost(opts, job)
    try:
        with open(opts.machine_file) as f:
            return f.read().splitlines(), job.said
    finally:
        policy.finish()


def test_a_spare_host_takes_all_of_a_lost_hosts_ranks(tmp_path, monkeypatch):
    lines, said = _rehost(tmp_path, monkeypatch, ["a", "b slots=2", "c", "s1 spare", "s2 spare"],
                          {"a", "c", "s1", "s2"})
    assert lines == ["a", "s1", "s1", "c", "s2 spare"]
    assert said == ["host b does not answer: rank 1 goes to s1 (a spare); "
                    "rank 2 goes to s1 (a spare)"]


def test_a_spare_named_by_dash_h_takes_a_lost_hosts_ranks(tmp_path, monkeypatch):
    lines, said = _rehost(tmp_path, monkeypatch, ["a", "b:2", "c", "s1:spare", "s2:spare"],
                          {"a", "c", "s1", "s2"}, dash_h=True)
    assert lines == ["a", "s1", "s1", "c", "s2 spare"]      # the rest stay spares
    assert said == ["host b does not answer: rank 1 goes to s1 (a spare); "
                    "rank 2 goes to s1 (a spare)"]


def test_without_a_spare_that_answers_the_others_take_the_ranks_in_turn(tmp_path, monkeypatch):
    lines, said = _rehost(tmp_path, monkeypatch, ["a", "b", "c", "d", "s1 spare"],
                          {"a", "d"})
    assert lines == ["a", "a", "d", "d", "s1 spare"]     # s1 is silent too
    assert said == ["hosts b, c do not answer: rank 1 goes to a; rank 2 goes to d"]
    lines, _ = _rehost(tmp_path, monkeypatch, ["a", "b", "c", "s1 spare"], {"a", "s1"})
    assert lines == ["a", "s1", "a"]                      # one spare, two hosts lost


def test_a_job_with_every_host_lost_moves_only_onto_spares(tmp_path, monkeypatch):
    lines, _ = _rehost(tmp_path, monkeypatch, ["a", "b", "s1 spare", "s2 spare"], {"s1", "s2"})
    assert lines == ["s1", "s2"]
    lines, said = _rehost(tmp_path, monkeypatch, ["a", "b", "s1 spare"], {"s1"})
    assert lines == ["a", "b", "s1 spare"] and said == []   # nowhere for b's rank: unchanged


def test_under_slurm_the_restart_leaves_the_failed_node_out():
    policy = restart.Policy(1)
    job = FakeJob(["n1", "n1", "n2"], "rank 2 (host n2, Slurm task 2) was killed by SIGKILL")
    policy._exclude(job)
    assert policy.excluded == {"n2"}
    assert job.said == ["leaving node n2 out of the restart (rank 2 failed there): its ranks "
                        "go to n1"]
    alone = FakeJob(["n1", "n1"], "rank 0 (host n1, Slurm task 0) exited with status 3")
    policy._exclude(alone)
    assert policy.excluded == {"n2"} and "is the job's only node" in alone.said[0]


def test_a_slurm_step_without_a_node_places_every_task():
    def run(argv, **kw):
        return subprocess.CompletedProcess(argv, 0, "n1\nn2\nn3\n", "")
    env = {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "n[1-3]",
           "SLURM_TASKS_PER_NODE": "2,1,1"}
    assert [h.host for h in slurm.allocation(env, run=run)] == ["n1", "n1", "n2", "n3"]
    assert [h.host for h in slurm.allocation(env, run=run, exclude={"n1"})] == \
        ["n2", "n3", "n2", "n3"]
    with pytest.raises(slurm.SlurmError, match="every node of the allocation"):
        slurm.allocation(env, run=run, exclude={"n1", "n2", "n3"})
    argv = slurm.srun_argv(4, ["x"], placed=True)
    assert {"--distribution=arbitrary", "--overcommit", "--overlap"} <= set(argv)
    assert "--distribution=block" in slurm.srun_argv(4, ["x"])


def test_a_new_allocation_passes_the_restarts_in_and_survives_a_dead_node():
    """--launcher slurm outside an allocation: the dsmexec salloc runs inside
    is the one that restarts, in an allocation that outlives a node."""
    opts = job.Options(machine_file=None, prog="p.py", python="/py", launcher="slurm",
                       ntasks=3, cwd="/w", restart=restart.Policy(2, "/ck"))
    argv = slurm.InNewAllocation(opts).argv
    assert argv[:4] == ["salloc", "--quiet", "--ntasks=3", "--no-kill"]
    i = argv.index("--restarts")
    assert argv[i:i + 4] == ["--restarts", "2", "--checkpoint-dir", "/ck"]
    plain = job.Options(machine_file=None, prog="p.py", python="/py", launcher="slurm",
                        ntasks=3, cwd="/w", restart=restart.Policy(0))
    argv = slurm.InNewAllocation(plain).argv
    assert "--no-kill" not in argv and "--restarts" not in argv
