"""``%%dsmexec``: run a notebook cell as a libdsm job, its output streamed into the cell.

    %load_ext libdsm_services.notebook

    %%dsmexec -n 4
    import libdsm
    with libdsm.init() as dsm:
        print("rank", dsm.rank, "of", dsm.size)

The magic's line holds dsmexec's options (docs/launcher.md), then
optionally ``--`` and the program's arguments; the cell is the program.  It
is written to a temporary file and run by dsmexec with this kernel's
interpreter, in the kernel's working directory.  Each rank's lines come into
the cell as they are printed, prefixed ``[rank N]`` as in a terminal: stdout
to the cell's stdout, stderr (tracebacks, dsmexec's own messages) to its
stderr.  A job that fails ends with ``dsmexec: exit status N``, after the
failing rank's traceback.  Interrupting the kernel sends dsmexec SIGINT,
which stops the job as Ctrl-C does in a terminal.

The launcher's side of libdsm: this module imports neither libdsm nor
IPython (IPython calls `load_ipython_extension`).
"""
import codecs
import os
import selectors
import shlex
import signal
import subprocess
import sys
import tempfile


def job_argv(line, path, python=None):
    """dsmexec's argv for a cell saved at path: the options on the magic's
    line, the program, then the words after ``--`` as its arguments."""
    words = shlex.split(line)
    opts, args = words, []
    if "--" in words:
        cut = words.index("--")
        opts, args = words[:cut], words[cut + 1:]
    return [python or sys.executable, "-m", "libdsm_services", *opts, path, *args]


def job_env(environ=None):
    """The kernel's environment, with the directory this package was imported
    from first on PYTHONPATH: dsmexec and its ranks then find the same
    libdsm_services (and, from a checkout, libdsm) even when the kernel
    found it through a sys.path entry of its own."""
    env = dict(os.environ if environ is None else environ)
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (top, env.get("PYTHONPATH")) if p)
    return env


class _Pump:
    """Copies a child's stdout and stderr to two text streams as the bytes come."""

    def __init__(self, proc, out, err):
        self._sel = selectors.DefaultSelector()
        for pipe, dest in ((proc.stdout, out), (proc.stderr, err)):
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            self._sel.register(pipe, selectors.EVENT_READ, (dest, decoder))

    def run(self):
        """Until both pipes are at their end (KeyboardInterrupt may leave it
        early: call again to go on)."""
        while self._sel.get_map():
            for key, _ in self._sel.select():
                dest, decoder = key.data
                data = os.read(key.fd, 65536)
                text = decoder.decode(data, final=not data)
                if text:
                    dest.write(text)
                    dest.flush()
                if not data:
                    self._sel.unregister(key.fileobj)
                    key.fileobj.close()


def run_cell(line, cell, out=None, err=None):
    """Run cell as a dsmexec job with the options in line; its output goes
    to out and err (default: the current sys.stdout and sys.stderr, which a
    notebook shows in the cell).  Returns dsmexec's exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    fd, path = tempfile.mkstemp(prefix="dsmexec_cell_", suffix=".py")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(cell)
        proc = subprocess.Popen(job_argv(line, path), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=job_env())
        pump = _Pump(proc, out, err)
        while True:
            try:
                pump.run()
                status = proc.wait()
                break
            except KeyboardInterrupt:           # the kernel was interrupted
                proc.send_signal(signal.SIGINT)
    finally:
        os.unlink(path)
    if status:
        err.write("dsmexec: exit status %d\n" % status)
        err.flush()
    return status


def dsmexec(line, cell):
    """%%dsmexec [dsmexec options] [-- program arguments]: run the cell as a
    libdsm job (`-n 4`: four ranks on this machine), each rank's output
    streamed into the cell with its [rank N] prefix."""
    run_cell(line, cell)


def load_ipython_extension(ipython):
    """``%load_ext libdsm_services.notebook``."""
    ipython.register_magic_function(dsmexec, "cell", "dsmexec")
