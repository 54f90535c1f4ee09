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
import sys

from libdsm_services import job, machinefile, report, restart, slurm, version, wire

USAGE = "%(prog)s [options] MACHINE_FILE PROG [ARGS...]\n       %(prog)s [options] -n N PROG [ARGS...]"
EPILOG = """\
MACHINE_FILE: one host per line (host, user@host); 'host slots=K' or 'host:K'
gives it K consecutive ranks.  Without one, -n N runs N ranks here (PROG must
then end in .py); under Slurm the allocation gives the hosts.

stdin goes to rank 0; the other ranks read /dev/null.

exit status: 0 if every rank exited 0; else the status of the first rank that
failed (128+N if signal N killed it); 1 if a rank could not start or register,
or exited after libdsm.init() without finalize(); 124 if --timeout ran out;
130/143/129 after SIGINT/SIGTERM/SIGHUP, even during another failure.
"""


class _Parser(argparse.ArgumentParser):
    """On a usage error: the error, the synopsis and a hint on stderr; exit 1."""

    def error(self, message):
        sys.stderr.write("%s: error: %s\n%sTry '%s --help' for more information.\n"
                         % (self.prog, message, self.format_usage(), self.prog))
        sys.exit(1)


def versions():
    """The versioned pieces: the launcher, the wire protocol, the C core."""
    try:
        from libdsm import _binding
        core = "%d.%d" % _binding.core_version()
    except ImportError as e:
        core = "not built (%s)" % e
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
                "slot of MACHINE_FILE, or as N local ranks.", epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_Version)
    slurm.add_options(p)
    report.add_options(p)
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
                           help="[MACHINE_FILE] PROG [ARGS...]: what follows PROG is its own")
    words.required = False      # argparse marks REMAINDER required, yet it may be empty
    return p


def split_words(words, launcher, ntasks):
    """(machine_file, prog, args) from the positional words, or a usage error text.

    Under Slurm there is no machine file; with -n, a first word ending in
    .py (or a lone word) is the program and the N ranks run here.
    """
    if launcher == "slurm" or (ntasks and words and (len(words) == 1 or
                                                      words[0].endswith(".py"))):
        return (None, words[0], words[1:]) if words else "no PROG given"
    if len(words) < 2:
        return ("no PROG given" if words else "give MACHINE_FILE and PROG, or -n N and PROG")
    return words[0], words[1], words[2:]


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
    """Command line -> job.Options; a usage error exits 1."""
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
    if not a.python:
        parser.error("no --python given and sys.executable is unknown")
    words, exported = split_words(a.words, launcher, a.ntasks), exports(a.exports, os.environ)
    for problem in (words, exported):
        if isinstance(problem, str):
            parser.error(problem)
    collector = report.Collector(a.trace, a.stats)
    policy = restart.Policy(a.restarts, a.checkpoint_dir)
    return job.Options(machine_file=words[0], prog=words[1], args=words[2],
                       ssh_all=a.ssh_all, ssh_options=a.ssh_options, identity=a.identity,
                       connect_timeout=a.connect_timeout, prefix=not a.no_prefix,
                       python=a.python, cwd=os.path.abspath(a.wdir or "."),
                       environ=policy.environ(collector.environ(dict(os.environ))),
                       launcher=launcher, restart=policy,
                       ntasks=a.ntasks, exports=exported, timeout=a.timeout,
                       output_dir=a.output_dir and os.path.abspath(a.output_dir),
                       report=collector)


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
