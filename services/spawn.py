"""Argv and environment builders for starting ranks: pure functions, no side effects.

A rank is ``python -u -m services.rank --rank R --master M PROG ARGS...``
(see services/rank.py).  A local rank runs it directly; a remote rank runs
it through ssh as ONE command string, because ssh joins its arguments with
spaces and the remote shell splits them again.  The job secret is never in
any of these: it goes to the rank on its stdin.
"""
import math
import os
import shlex

import services

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(services.__file__)))
"""The directory holding dsmexec.py and services/: the ranks' PYTHONPATH."""

FORWARD_PREFIX = "DSM_"


def rank_argv(python, rank, master, prog, args):
    """The bootstrap command line of one rank (services.rank)."""
    return [python, "-u", "-m", "services.rank", "--rank", str(rank),
            "--master", master, prog, *args]


def local_master(port):
    """--master for a rank on this machine."""
    return "127.0.0.1:%d" % port


def ssh_master(port):
    """--master for a rank reached with ssh: the host comes from $SSH_CLIENT."""
    return "ssh:%d" % port


def forwarded_env(environ):
    """The DSM_* variables of the launcher's environment, sorted by name."""
    return {k: environ[k] for k in sorted(environ) if k.startswith(FORWARD_PREFIX)}


def local_env(environ, repo_root=REPO_ROOT):
    """Environment of a local rank: environ, repo root first on PYTHONPATH, unbuffered."""
    env = dict(environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = repo_root + (os.pathsep + old if old else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def remote_env(environ, repo_root=REPO_ROOT):
    """Variables set on a remote rank: PYTHONPATH, PYTHONUNBUFFERED and every DSM_*."""
    env = {"PYTHONPATH": repo_root, "PYTHONUNBUFFERED": "1"}
    env.update(forwarded_env(environ))
    return env


def remote_command(argv, env, cwd):
    """The one string ssh runs: ``cd CWD && exec env K=V... ARGV...``, shell-quoted."""
    assignments = ["%s=%s" % kv for kv in env.items()]
    return "%s && %s" % (shlex.join(["cd", cwd]), shlex.join(["exec", "env", *assignments, *argv]))


def ssh_argv(host, command, options=(), identity=None, connect_timeout=10, env=None, cwd="."):
    """The ssh argv that runs `command` (an argv list) on a machine-file `host`.

    ``host`` is a machinefile.Host; ``options`` are extra ``-o`` values
    (ssh keeps the first value of each option, so BatchMode=yes and
    ConnectTimeout cannot be overridden); ``env`` is set on the remote side
    with ``env``; the remote command first changes to ``cwd``.
    """
    argv = ["ssh", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=%d" % max(1, math.ceil(connect_timeout))]
    for option in options:
        argv += ["-o", option]
    if identity:
        argv += ["-i", identity]
    if host.user:
        argv += ["-l", host.user]
    argv += [host.host, remote_command(command, env or {}, cwd)]
    return argv
