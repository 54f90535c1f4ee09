"""dsmexec's command line: parse it into job.Options and run the job.

    dsmexec [options] machine_file prog [args...]

Local hosts (localhost, 127.0.0.1, this machine's name) start directly,
the others through ssh (key authentication, no prompts).  Each output line
is prefixed ``[rank N] ``; rank stdout goes to stdout, stderr to stderr.
The entry points (the ``dsmexec`` command, ``python -m libdsm.run``,
./dsmexec.py in the source tree) reach `main` through
libdsm_services.main, which checks the interpreter first.
"""
import argparse
import os
import re
import subprocess
import sys
from typing import NamedTuple, Optional

from libdsm_services import job, machinefile, report, restart, slurm, version, wire
from libdsm_services.start import local_hosts

USAGE = """\
%(prog)s [options] [-n N] [-H HOSTS] [python] PROG [ARGS...]
       %(prog)s [options] [-n N] [-H HOSTS] [python] -m MODULE [ARGS...]
       %(prog)s [options] MACHINE_FILE [python] PROG [ARGS...]"""
EPILOG = """\
Where the ranks run: MACHINE_FILE (one host per line; 'host slots=K' or
'host:K' gives it K consecutive ranks; 'host spare' or 'host:spare' none until
--restarts moves a lost host's ranks there), or -H host1,host2:K,host3:spare
(the same entries, comma-separated), or under Slurm the allocation; with none
of them, N ranks here (-n N; default: this machine's %d cores).
A job has at most %d ranks.
The first word is the MACHINE_FILE when it reads as one and a program follows.
A 'python' (or any python interpreter) before PROG or -m is allowed; a path to
one becomes --python.

stdin goes to rank 0; the other ranks read /dev/null.

exit status: 0 if every rank exited 0; else the status of the first rank that
failed (128+N if signal N killed it); 1 for a usage error, or if a rank could
not start or register, or exited after libdsm.init() without finalize(); 124
if --timeout ran out; 130/143/129 after SIGINT/SIGTERM/SIGHUP, even during
another failure.  On --timeout and on a stop signal every rank's Python stack
is printed before the job stops.
""" % (os.cpu_count() or 1, machinefile.MAX_RANKS)
_INTERPRETER = re.compile(r"python[0-9.]*\Z")


class _Parser(argparse.ArgumentParser):
    """On a usage error: the error, the synopsis and a hint on stderr; exit 1."""

    def error(self, message):
        sys.stderr.write("%s: error: %s\n%sTry '%s --help' for more information.\n"
                         % (self.prog, message, self.format_usage(), self.prog))
        sys.exit(1)


CORE_VERSION = ("from libdsm import _binding\n"
                "print('%d.%d' % _binding.core_version())")
"""Asked of a child interpreter: the launcher never imports libdsm (services/__init__.py)."""


def versions(python=sys.executable):
    """The versioned pieces: the launcher, the wire protocol, the C core (as
    python, the ranks' interpreter, finds it)."""
    p = subprocess.run([python, "-c", CORE_VERSION], capture_output=True, text=True)
    last = (p.stderr.strip().splitlines() or ["no output"])[-1]
    core = p.stdout.strip() if p.returncode == 0 else "not built (%s)" % last
    return ("dsmexec %s\nwire protocol %d.%d\nC core %s\n"
            % (version(), wire.PROTOCOL_MAJOR, wire.PROTOCOL_MINOR, core))


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, help="print the versions and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(versions())
        sys.exit(0)


def build_parser():
    p = _Parser(prog="dsmexec", usage=USAGE, description="Run PROG as one libdsm rank per "
                "slot of MACHINE_FILE or -H, or as N local ranks.", epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_Version)
    slurm.add_options(p)
    report.add_options(p)
    p.add_argument("-H", "--host", dest="hosts", metavar="HOSTS",
                   help="the hosts, comma-separated: host, user@host, host:K (K slots), "
                   "host:spare (no rank until a restart moves a lost host's ranks there); "
                   "instead of a MACHINE_FILE")
    p.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE [ARGS]",
                   help="run library module MODULE as the program (as python -m)")
    restart.add_options(p)
    p.add_argument("-x", dest="exports", metavar="VAR[=VALUE]", action="append", default=[],
                   help="set VAR on every rank, to VALUE or to its value here (repeatable)")
    p.add_argument("--wdir", metavar="DIR", help="the ranks' working directory (default: "
                   "dsmexec's); PROG and relative paths are taken from there")
    p.add_argument("--output-filename", metavar="DIR", dest="output_dir",
                   help="also write each rank's output, without the prefix, to "
                   "DIR/rank.N.stdout and DIR/rank.N.stderr (DIR is made if needed)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="stop the whole job after SECONDS and exit with 124")
    p.add_argument("--ssh-all", action="store_true",
                   help="start every rank through ssh, local hosts too")
    p.add_argument("-o", dest="ssh_options", metavar="OPTION", action="append", default=[],
                   help="pass '-o OPTION' to ssh (repeatable); a ControlMaster, ControlPath or "
                   "ControlPersist option turns off dsmexec's own sharing of one ssh "
                   "connection by the ranks on a host")
    p.add_argument("-i", dest="identity", metavar="IDENTITY_FILE", help="ssh identity file")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="ssh ConnectTimeout, and the time a rank gets to register (default 10)")
    p.add_argument("--no-prefix", action="store_true", help="do not prefix lines with [rank N]")
    p.add_argument("--python", default=sys.executable, metavar="PATH",
                   help="Python interpreter on the ranks (default: %(default)s)")
    words = p.add_argument("words", nargs=argparse.REMAINDER, metavar="...",
                           help="[MACHINE_FILE] [python] PROG [ARGS...]: what follows PROG "
                           "is its own")
    words.required = False      # argparse marks REMAINDER required, yet it may be empty
    return p


class Program(NamedTuple):
    """What the positional words ask to run: where (a machine file, or None) and what."""
    machine_file: Optional[str]
    prog: str               # a file, or a module name with `module`
    args: list
    module: bool = False
    python: Optional[str] = None    # an interpreter path written before the program


def is_interpreter(word):
    """True for python, python3, python3.11 (a path to one too) and sys.executable."""
    return word == sys.executable or bool(_INTERPRETER.match(os.path.basename(word)))


def _starts_program(word):
    """A word that can only start the program: -m, an interpreter, a .py file."""
    return word == "-m" or is_interpreter(word) or word.endswith(".py")


def program(words):
    """[python] PROG ARGS or [python] -m MODULE ARGS -> Program; a usage error text."""
    python = None
    if words and is_interpreter(words[0]):
        python = words[0] if os.sep in words[0] else None
        words = words[1:]
    if not words:
        return "no PROG given after the interpreter"
    if words[0] == "-m":
        return (Program(None, words[1], words[2:], True, python) if len(words) > 1
                else "-m needs a MODULE")
    if words[0].startswith("-"):
        return "%s: the interpreter's options are not passed on; only -m MODULE is" % words[0]
    return Program(None, words[0], words[1:], False, python)


def split_words(words, cwd, machine_file_allowed=True):
    """Program from the positional words ([MACHINE_FILE] [python] PROG [ARGS...]), or a
    usage error text.

    The first word is the MACHINE_FILE when a program surely follows it (a .py
    file, -m, an interpreter), or when it reads as a machine file and the next
    word is a file too; it is the program when it is a file and the next is
    none of those.  Else both readings are named in the error.
    """
    if not words:
        return "no PROG given"
    first, rest = words[0], words[1:]
    if _starts_program(first) or not rest or not machine_file_allowed:
        return program(words)
    then = os.path.join(cwd, rest[0])
    hosts = os.path.isfile(first) and machinefile.reads_as_machine_file(first)
    if _starts_program(rest[0]) or (hosts and os.path.isfile(then)):
        found = program(rest)
        return found._replace(machine_file=first) if isinstance(found, Program) else found
    if os.path.isfile(os.path.join(cwd, first)) and not hosts:
        return program(words)
    if hosts:
        return ("%r could be the MACHINE_FILE, but then PROG %r is not there; or PROG, but "
                "it reads as a machine file" % (first, rest[0]))
    return ("%r is neither a MACHINE_FILE nor PROG: no such file%s"
            % (first, "" if os.path.isabs(first) else " in %s" % cwd))


def exports(specs, environ):
    """-x values -> {name: value}; a usage error text for a bad or unset name."""
    out = {}
    for spec in specs:
        name, eq, value = spec.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            return "-x %s: %r is not a variable name" % (spec, name)
        if not eq and name not in environ:
            return "-x %s: %s is not set here; give -x %s=VALUE" % (spec, name, name)
        out[name] = value if eq else environ[name]
    return out


def parse_options(argv):
    """Command line -> job.Options; a usage error exits 1 before anything starts."""
    argv = sys.argv[1:] if argv is None else argv
    launcher = slurm.launcher(argv, os.environ)
    parser = build_parser()
    a = parser.parse_args(argv)
    if not a.connect_timeout > 0:
        parser.error("--connect-timeout must be positive, got %g" % a.connect_timeout)
    if a.restarts < 0:
        parser.error("--restarts must be 0 or more, got %d" % a.restarts)
    for flag, value in (("-n", a.ntasks), ("--timeout", a.timeout)):
        if value is not None and not value > 0:
            parser.error("%s must be positive, got %g" % (flag, value))
    if a.ntasks is not None and a.ntasks > machinefile.MAX_RANKS:
        parser.error("-n %d: a job has at most %d ranks" % (a.ntasks, machinefile.MAX_RANKS))
    cwd = os.path.abspath(a.wdir or ".")
    what = (program(["-m", *a.module]) if a.module is not None else
            split_words(a.words, cwd, launcher != "slurm" and a.hosts is None))
    exported = exports(a.exports, os.environ)
    for problem in (what, exported):
        if isinstance(problem, str):
            parser.error(problem)
    python = what.python if what.python and a.python == sys.executable else a.python
    if not python:
        parser.error("no --python given and sys.executable is unknown")
    hosts = rank_hosts(parser, a, what.machine_file, launcher)
    local = hosts is not None and any(not a.ssh_all and h.user is None and
                                      machinefile.is_local(h.host) for h in hosts)
    problem = None if what.module or not local else program_problem(what.prog, cwd)
    if problem:
        parser.error(problem)
    collector = report.Collector(a.trace, a.stats)
    spares = machinefile.spares_of(a.hosts) if hosts is not None and a.hosts else ()
    policy = restart.Policy(a.restarts, a.checkpoint_dir, os.environ.get(restart.JOB_VAR),
                            spares)
    return job.Options(machine_file=what.machine_file, prog=what.prog, args=what.args,
                       module=what.module, hosts=hosts,
                       ssh_all=a.ssh_all, ssh_options=a.ssh_options, identity=a.identity,
                       connect_timeout=a.connect_timeout, prefix=not a.no_prefix,
                       python=python, cwd=cwd,
                       environ=policy.environ(collector.environ(dict(os.environ))),
                       launcher=launcher, restart=policy,
                       ntasks=a.ntasks, exports=exported, timeout=a.timeout,
                       output_dir=a.output_dir and os.path.abspath(a.output_dir),
                       report=collector)


def rank_hosts(parser, a, machine_file, launcher):
    """The host of every rank, read and checked before anything starts; None under Slurm
    (the allocation says).  Without a machine file or -H: -n N, or this machine's cores."""
    if launcher == "slurm":
        return None
    try:
        if machine_file is not None:
            return machinefile.parse(machine_file, a.ntasks)
        if a.hosts is not None:
            return machinefile.parse_hosts(a.hosts, a.ntasks)
    except ValueError as e:     # MachineFileError too
        parser.error(str(e))
    return local_hosts(a.ntasks or min(os.cpu_count() or 1, machinefile.MAX_RANKS))


def program_problem(prog, cwd):
    """Why the program file of local ranks cannot run, or None."""
    path = os.path.join(cwd, prog)
    where = "" if os.path.isabs(prog) else " in %s" % cwd
    if os.path.isdir(path):
        return "%s is a directory%s, not a program" % (prog, where)
    if not os.path.isfile(path):
        return "%s: no such file%s" % (prog, where)
    return None


def main(argv=None):
    opts = parse_options(argv)
    make_job = slurm.make_job if opts.launcher == "slurm" else job.Job
    try:
        the_job = make_job(opts)
    except (machinefile.MachineFileError, slurm.SlurmError, job.LaunchError) as e:
        sys.stderr.write("dsmexec: %s\n" % e)
        opts.report.finish(quiet=True)
        return job.EXIT_LAUNCH
    try:
        return opts.restart.run(opts, the_job, make_job)
    finally:
        opts.report.finish(len(getattr(the_job, "ranks", ())))
