"""The pure argv builders (services/spawn.py), and the secret's way into a rank."""
import json
import os
import shlex
import subprocess
import sys

import pytest

from libdsm_services import procs, spawn, wire
from libdsm_services.machinefile import Host

AWKWARD = ["a b", "it's", '"q"', "$HOME", "`id`", "; rm -rf /", "ünï", "", "*", "\\n", "-x"]
HOST = Host(None, "node2", 3, "node2")


def test_repo_root_holds_dsmexec():
    assert os.path.isfile(os.path.join(spawn.REPO_ROOT, "dsmexec.py"))
    assert os.path.isabs(spawn.REPO_ROOT)


def test_no_module_imports_services_by_its_directory_name():
    """One name, libdsm_services, in a checkout and installed: `services.x` would be a
    second copy of each module (and of the rank's CONTEXT)."""
    import re
    import subprocess as sp
    tracked = sp.run(["git", "ls-files", "*.py"], cwd=spawn.REPO_ROOT, capture_output=True,
                     text=True).stdout.split()
    bad = re.compile(r"^\s*(from services[. ]|import services\b)|-m services\.", re.M)
    assert [f for f in tracked if bad.search(open(os.path.join(spawn.REPO_ROOT, f)).read())] \
        == []


def test_rank_argv():
    assert spawn.rank_argv("/usr/bin/python3", 2, "127.0.0.1:5000", "prog.py", ["-x", "1"]) == [
        "/usr/bin/python3", "-u", "-m", "libdsm_services.rank", "--rank", "2",
        "--master", "127.0.0.1:5000", "prog.py", "-x", "1"]
    assert spawn.rank_argv("py", 0, "ssh:1", "p.py", [], listen="127.0.0.1") == [
        "py", "-u", "-m", "libdsm_services.rank", "--rank", "0", "--master", "ssh:1",
        "--listen", "127.0.0.1", "p.py"]
    assert spawn.rank_argv("py", 0, "ssh:1", "p.py", ["a"], supervise=True) == [
        "py", "-u", "-m", "libdsm_services.rank", "--rank", "0", "--master", "ssh:1", "--supervise",
        "p.py", "a"]


def test_masters():
    assert spawn.local_master(4242) == "127.0.0.1:4242"
    assert spawn.ssh_master(4242) == "ssh:4242"


def test_ssh_argv_minimal():
    argv = spawn.ssh_argv(HOST, ["python", "-V"], cwd="/w")
    assert argv == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "node2",
                    "cd /w && exec env python -V"]


def test_ssh_argv_with_user_options_identity_and_timeout():
    argv = spawn.ssh_argv(Host("dsm", "node2", 3, ""), ["p"], options=["Port=2222", "A=b"],
                          identity="/k/id", connect_timeout=2.5, env={"X": "1"}, cwd="/w")
    assert argv == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
                    "-o", "Port=2222", "-o", "A=b", "-i", "/k/id", "-l", "dsm", "node2",
                    "cd /w && exec env X=1 p"]


def test_remote_command_is_one_string_that_a_shell_splits_back():
    env = {"PYTHONPATH": "/r o/ot", "DSM_V": "a'b"}
    cmd = spawn.remote_command(["prog", *AWKWARD], env, "/c w'd")
    assert shlex.split(cmd) == ["cd", "/c w'd", "&&", "exec", "env", "PYTHONPATH=/r o/ot",
                                "DSM_V=a'b", "prog", *AWKWARD]


def test_awkward_args_and_env_survive_a_real_shell(tmp_path):
    """What sshd does with the string: $SHELL -c STRING.  Run it with sh here."""
    code = "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ['DSM_V'], os.getcwd()]))"
    cmd = spawn.remote_command([sys.executable, "-c", code, *AWKWARD], {"DSM_V": "x $y"},
                               str(tmp_path))
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [AWKWARD, "x $y", str(tmp_path)]


def test_only_dsm_variables_are_forwarded():
    environ = {"DSM_SIZE": "64M", "DSM_DEBUG": "1", "PATH": "/bin", "DSMX": "no", "dsm_x": "no"}
    assert spawn.forwarded_env(environ) == {"DSM_DEBUG": "1", "DSM_SIZE": "64M"}
    assert list(spawn.remote_env(environ, "/repo").items()) == [
        ("PYTHONPATH", "/repo"), ("PYTHONUNBUFFERED", "1"), ("DSM_DEBUG", "1"), ("DSM_SIZE", "64M")]


def test_remote_ranks_get_the_pythonpath_and_exports_a_local_rank_gets():
    environ = {"PYTHONPATH": "/tmp/x:/opt/mylib", "FOO": "bar", "HOME": "/h", "DSM_A": "1"}
    exports = {"FOO": "bar", "OMP_NUM_THREADS": "1"}
    remote = spawn.remote_env(environ, "/repo", exports)
    assert remote == {"PYTHONPATH": "/repo:/tmp/x:/opt/mylib", "PYTHONUNBUFFERED": "1",
                      "DSM_A": "1", "FOO": "bar", "OMP_NUM_THREADS": "1"}
    local = spawn.local_env(environ, "/repo", exports)
    assert {k: local[k] for k in remote} == remote
    assert spawn.remote_env({}, None) == {"PYTHONUNBUFFERED": "1"}     # installed: no checkout
    assert spawn.remote_env({}, "/r", {"PYTHONPATH": "/x"})["PYTHONPATH"] == "/r:/x"


def test_dsm_variables_land_in_the_ssh_command():
    argv = spawn.ssh_argv(HOST, ["p"], env=spawn.remote_env({"DSM_HOLD_US": "20"}, "/repo"),
                          cwd="/w")
    assert argv[-1] == "cd /w && exec env PYTHONPATH=/repo PYTHONUNBUFFERED=1 DSM_HOLD_US=20 p"


def test_local_env_prepends_the_repo_root():
    env = spawn.local_env({"PYTHONPATH": "/old", "DSM_A": "1", "HOME": "/h"}, "/repo")
    assert env == {"PYTHONPATH": "/repo" + os.pathsep + "/old", "DSM_A": "1", "HOME": "/h",
                   "PYTHONUNBUFFERED": "1"}
    assert spawn.local_env({}, "/repo")["PYTHONPATH"] == "/repo"


def test_the_secret_reaches_a_local_rank_on_stdin_only(tmp_path):
    secret = wire.new_secret()
    code = ("import os, sys; print(repr(sys.argv)); print(repr(dict(os.environ)));"
            "print(sys.stdin.readline().strip()); print(repr(sys.stdin.read()))")
    argv = spawn.rank_argv(sys.executable, 0, "127.0.0.1:1", "prog.py", [])[:1] + ["-c", code]
    p = procs.LocalProcess(argv, spawn.local_env(os.environ), str(tmp_path), secret)
    out = b""
    while True:
        chunk = os.read(p.stdout_fd, 65536)
        if not chunk:
            break
        out += chunk
    procs.reap([p])
    p.close()
    assert p.status == 0
    shown_argv, shown_env, line, rest = out.decode().splitlines()
    assert secret.hex() not in shown_argv and secret.hex() not in shown_env
    assert line == secret.hex()
    assert rest == "''"             # stdin was closed after the secret


# ---------------------------------------------------------------- connection sharing

def test_ssh_argv_through_a_control_master():
    argv = spawn.ssh_argv(HOST, ["p"], options=["Port=2222"], cwd="/w", control_path="/t/m0")
    assert argv == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                    "-o", "ControlMaster=no", "-o", "ControlPath=/t/m0", "-o", "Port=2222",
                    "node2", "cd /w && exec env p"]


def test_control_master_argv_runs_nothing_and_stays_in_the_foreground():
    argv = spawn.control_master_argv(Host("dsm", "node2", 3, ""), "/t/50%/m1", ["Port=2222"],
                                     "/k/id", 2.5)
    assert argv == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
                    "-o", "ControlMaster=yes", "-o", "ControlPath=/t/50%%/m1",
                    "-o", "ControlPersist=no", "-o", "Port=2222", "-i", "/k/id", "-l", "dsm",
                    "-N", "node2"]


def test_share_groups_are_ranks_with_the_same_user_and_host():
    h = [Host(None, "a", 1, "a"), Host(None, "b", 2, "b"), Host(None, "a", 3, "a"),
         Host("u", "a", 4, "u@a"), Host(None, "c", 5, "c"), Host("u", "a", 6, "u@a"),
         Host(None, "a", 7, "a")]
    assert spawn.share_groups(h) == [[0, 2, 6], [3, 5]]        # b and c: alone, no sharing


def test_share_groups_are_at_most_max_shared_ranks():
    h = [Host(None, "a", i + 1, "a") for i in range(7)]
    assert spawn.share_groups(h, max_shared=3) == [[0, 1, 2], [3, 4, 5]]     # rank 6 alone
    assert spawn.share_groups(h[:2], max_shared=1) == []
    assert spawn.MAX_SHARED == 10


@pytest.mark.parametrize("option", ["ControlMaster=no", "controlpath none",
                                    " CONTROLPERSIST\t5"])
def test_a_user_sharing_option_turns_ours_off(option):
    h = [Host(None, "a", 1, "a"), Host(None, "a", 2, "a")]
    assert spawn.user_controls_sharing(["Port=22", option])
    assert spawn.share_groups(h, ["Port=22", option]) == []
    assert spawn.share_groups(h, ["Port=22", "ControlMasterX=1"]) == [[0, 1]]


def test_option_name():
    assert [spawn.option_name(o) for o in ["Port=22", "Port 22", " port\t22", "A"]] == [
        "port", "port", "port", "a"]


def test_control_path_fits_a_socket_address():
    assert spawn.control_path("/tmp/dsm-ssh-x", 3) == "/tmp/dsm-ssh-x/m3"
    assert spawn.control_path("/" + "d" * 100, 0) is None
