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
import sys

from libdsm_services import job, machinefile, slurm, version, wire

EPILOG = """\
exit status: 0 if every rank exited 0; else the status of the first rank that
failed (128+N if signal N killed it); 1 if a rank could not start or register,
or exited after libdsm.init() without finalize(); 130/143/129 after
SIGINT/SIGTERM/SIGHUP, even during another failure.
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


def build_parser(launcher="ssh"):
    p = _Parser(prog="dsmexec", description="Run PROG on every host of MACHINE_FILE "
                "as one libdsm rank per line.", epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_Version)
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
    slurm.add_options(p)
    if launcher != "slurm":     # under Slurm the hosts come from the allocation
        p.add_argument("machine_file", help="one host per line: host or user@host")
    p.add_argument("prog", help="the Python program every rank runs")
    rest = p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for PROG")
    rest.required = False       # argparse marks REMAINDER required, yet it may be empty
    return p


def parse_options(argv):
    """Command line -> job.Options; a usage error exits 1."""
    launcher = slurm.launcher(sys.argv[1:] if argv is None else argv, os.environ)
    parser = build_parser(launcher)
    a = parser.parse_args(argv)
    if not a.connect_timeout > 0:
        parser.error("--connect-timeout must be positive, got %g" % a.connect_timeout)
    if not a.python:
        parser.error("no --python given and sys.executable is unknown")
    return job.Options(machine_file=getattr(a, "machine_file", None), prog=a.prog, args=a.args,
                       ssh_all=a.ssh_all, ssh_options=a.ssh_options, identity=a.identity,
                       connect_timeout=a.connect_timeout, prefix=not a.no_prefix,
                       python=a.python, cwd=os.getcwd(), environ=dict(os.environ),
                       launcher=launcher, ntasks=a.ntasks)


def main(argv=None):
    opts = parse_options(argv)
    try:
        the_job = (slurm.make_job if opts.launcher == "slurm" else job.Job)(opts)
    except (machinefile.MachineFileError, slurm.SlurmError) as e:
        sys.stderr.write("dsmexec: %s\n" % e)
        return job.EXIT_LAUNCH
    return the_job.run()
