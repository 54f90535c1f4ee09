"""Argv and environment builders for starting ranks: pure functions, no side effects.

A rank is ``python -u -m libdsm_services.rank --rank R --master M PROG ARGS...``
(see services/rank.py).  A local rank runs it directly; a remote rank runs
it through ssh as ONE command string, because ssh joins its arguments with
spaces and the remote shell splits them again.  The job secret is never in
any of these: it goes to the rank on its stdin.
"""
import math
import os
import shlex

import libdsm_services

_ROOT = os.path.dirname(libdsm_services.HERE)
REPO_ROOT = _ROOT if os.path.isfile(os.path.join(_ROOT, "dsmexec.py")) else None
"""The checkout dsmexec runs from (it holds dsmexec.py), first on the ranks'
PYTHONPATH; None for an installed dsmexec, whose ranks find libdsm installed."""

FORWARD_PREFIX = "DSM_"


def rank_argv(python, rank, master, prog, args, listen=None, supervise=False, module=False):
    """The bootstrap command line of one rank (services.rank).

    ``listen``: the address its peer listener binds (default 0.0.0.0); an
    all-local job gives 127.0.0.1.  ``supervise``: run it under a parent
    that reports its real exit status (ssh ranks).  ``module``: prog is a
    module name (dsmexec -m).
    """
    extra = (["--listen", listen] if listen else []) + (["--supervise"] if supervise else [])
    return [python, "-u", "-m", "libdsm_services.rank", "--rank", str(rank),
            "--master", master, *extra, *program_words(prog, module), *args]


def program_words(prog, module):
    """The bootstrap's words for the program: PROG, or --module NAME."""
    return ["--module", prog] if module else [prog]


def local_master(port):
    """--master for a rank on this machine."""
    return "127.0.0.1:%d" % port


def ssh_master(port):
    """--master for a rank reached with ssh: the host comes from $SSH_CLIENT."""
    return "ssh:%d" % port


def forwarded_env(environ, exports=()):
    """What every rank gets from the launcher: the DSM_* variables of environ
    (sorted by name), then the `exports` (-x: name -> value), in order."""
    env = {k: environ[k] for k in sorted(environ) if k.startswith(FORWARD_PREFIX)}
    env.update(exports)
    return env


def python_path(environ, repo_root=REPO_ROOT):
    """The ranks' PYTHONPATH: the checkout first (if any), then the launcher's own."""
    return os.pathsep.join(p for p in (repo_root, environ.get("PYTHONPATH")) if p)


def local_env(environ, repo_root=REPO_ROOT, exports=()):
    """Environment of a local rank: environ and the exports, PYTHONPATH, unbuffered."""
    env = {**environ, **dict(exports)}
    return {**env, **_python_env(env, repo_root)}


def remote_env(environ, repo_root=REPO_ROOT, exports=()):
    """Variables set on a remote rank (ssh, Slurm): PYTHONPATH and PYTHONUNBUFFERED as a
    local rank has them, then every DSM_* and the exports."""
    forwarded = forwarded_env(environ, exports)
    path = _python_env({**environ, **forwarded}, repo_root)
    return {**path, **{k: v for k, v in forwarded.items() if k not in path}}


def _python_env(environ, repo_root):
    path = python_path(environ, repo_root)
    return {**({"PYTHONPATH": path} if path else {}), "PYTHONUNBUFFERED": "1"}


def remote_command(argv, env, cwd):
    """The one string ssh runs: ``cd CWD && exec env K=V... ARGV...``, shell-quoted."""
    assignments = ["%s=%s" % kv for kv in env.items()]
    return "%s && %s" % (shlex.join(["cd", cwd]), shlex.join(["exec", "env", *assignments, *argv]))


def _ssh_prefix(host, options, identity, connect_timeout, sharing):
    """ssh, the fixed options, `sharing` (more -o values), the user's, -i, -l; no host yet."""
    argv = ["ssh", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=%d" % max(1, math.ceil(connect_timeout))]
    for option in [*sharing, *options]:
        argv += ["-o", option]
    if identity:
        argv += ["-i", identity]
    if host.user:
        argv += ["-l", host.user]
    return argv


def ssh_argv(host, command, options=(), identity=None, connect_timeout=10, env=None, cwd=".",
             control_path=None):
    """The ssh argv that runs `command` (an argv list) on a machine-file `host`.

    ``host`` is a machinefile.Host; ``options`` are extra ``-o`` values
    (ssh keeps the first value of each option, so BatchMode=yes and
    ConnectTimeout cannot be overridden); ``env`` is set on the remote side
    with ``env``; the remote command first changes to ``cwd``.  With a
    ``control_path`` the session goes through the control master listening
    there (see control_master_argv) instead of a connection of its own.
    """
    sharing = [] if control_path is None else [
        "ControlMaster=no", "ControlPath=" + _escape_percent(control_path)]
    return [*_ssh_prefix(host, options, identity, connect_timeout, sharing),
            host.host, remote_command(command, env or {}, cwd)]


# ---------------------------------------------------------------- connection sharing
#
# Ranks that go to the same destination (same user and host; the options are
# the job's) share one ssh connection: a control master (``ssh -N``, no
# remote command) connects and authenticates once, then each rank's ssh runs
# its session over it, without a key exchange of its own.

CONTROL_OPTIONS = ("controlmaster", "controlpath", "controlpersist")
"""ssh options that configure connection sharing: one given with -o turns ours off."""

MAX_SHARED = 10
"""Ranks per control master: sshd's default MaxSessions (sessions per connection)."""

MAX_SOCKET_PATH = 107 - 17
"""Longest ControlPath: a unix socket path, less the suffix ssh adds while binding it."""


def option_name(option):
    """The lower-case name of an ssh -o value: 'Port=22' and 'Port 22' -> 'port'."""
    return option.strip().replace("=", " ").replace("\t", " ").split(" ", 1)[0].lower()


def user_controls_sharing(options):
    """True if one of the -o values configures connection sharing itself."""
    return any(option_name(o) in CONTROL_OPTIONS for o in options)


def share_groups(hosts, options=(), max_shared=MAX_SHARED):
    """Which ranks share a connection: lists of indices into `hosts`, in order.

    Ranks with the same user and host form a group, split into runs of at
    most `max_shared`; a run of one rank (nothing to share) is left out, and
    so is everything when the user's `options` configure sharing.
    """
    if user_controls_sharing(options):
        return []
    by_destination = {}
    for i, host in enumerate(hosts):
        by_destination.setdefault((host.user, host.host), []).append(i)
    groups = []
    for indices in by_destination.values():
        for start in range(0, len(indices), max_shared):
            run = indices[start:start + max_shared]
            if len(run) > 1:
                groups.append(run)
    return sorted(groups)


def control_path(directory, group):
    """The control socket of share group number `group` in `directory`, or None if too long."""
    path = os.path.join(directory, "m%d" % group)
    return path if len(path.encode()) <= MAX_SOCKET_PATH else None


def _escape_percent(path):
    """ssh expands %-tokens in ControlPath: keep a literal % literal."""
    return path.replace("%", "%%")


def control_master_argv(host, control_path, options=(), identity=None, connect_timeout=10):
    """The ssh argv of a control master for `host`: connect, listen on control_path, run nothing.

    It stays in the foreground (ControlPersist=no) until it is stopped.
    """
    sharing = ["ControlMaster=yes", "ControlPath=" + _escape_percent(control_path),
               "ControlPersist=no"]
    return [*_ssh_prefix(host, options, identity, connect_timeout, sharing), "-N", host.host]
