"""Where checkpoint generations are kept: a directory of files, each part
written whole or not at all, and a manifest per generation written last.

    ROOT/gen-000007/part-0003    the pages one rank saved (by page runs)
    ROOT/gen-000007/state-0003   rank 3's pickled state
    ROOT/gen-000007.json         the manifest: the generation is complete
                                 once it exists

Every file is written to a temporary name, fsynced and renamed; the
manifest is renamed last and its directory fsynced, so a generation is
either complete or invisible.  ROOT is the user's --checkpoint-dir, or a
directory in /dev/shm named per job (buddy memory: see libdsm.checkpoint).
Stdlib only; it knows files, not pages.
"""
import contextlib
import json
import os
import re
import shutil
import threading
import zlib

_MANIFEST = re.compile(r"gen-(\d{6})\.json$")
REFUSED = ".refused"
"""Suffix a refused manifest is renamed to: kept for a post-mortem, never restored."""


class CheckpointError(Exception):
    """A generation that cannot be used: a bad checksum, a missing or unreadable part,
    a manifest that does not match this job."""


def part_name(kind, index):
    return "%s-%04d" % (kind, index)


class Store:
    """The generations under root (made on first write)."""

    def __init__(self, root):
        self.root = root

    def gen_dir(self, gen):
        return os.path.join(self.root, "gen-%06d" % gen)

    def manifest_path(self, gen):
        return os.path.join(self.root, "gen-%06d.json" % gen)

    def path(self, gen, name):
        return os.path.join(self.gen_dir(gen), name)

    def write(self, gen, name, chunks, checksum=True, recycle=False, keep=None):
        """Write the byte chunks (an iterable of buffers) as gen's file name:
        tmp, fsync, rename.  With recycle, the file of that name of an older
        generation without a manifest (retired), other than keep, is written
        over, if there is one: in memory its pages need not be allocated and
        zeroed again, nor the old ones freed.  Returns (bytes written, crc32,
        or None without checksum)."""
        os.makedirs(self.gen_dir(gen), exist_ok=True)
        final = self.path(gen, name)
        tmp = final + ".tmp.%d" % os.getpid()
        crc = 0 if checksum else None
        total = 0
        if recycle:
            self._recycle(gen, name, tmp, keep)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for chunk in chunks:
                view, done = memoryview(chunk).cast("B"), 0
                if checksum:
                    crc = zlib.crc32(view, crc)
                while done < len(view):
                    done += os.write(fd, view[done:])
                total += len(view)
            os.ftruncate(fd, total)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, final)
        return total, crc

    def _recycle(self, gen, name, tmp, keep):
        """Move the file name of a retired generation older than gen, not keep,
        to tmp, if any.  A generation without a manifest here may have one on
        another host (its keeper there wrote it, this one died first): only
        the caller knows which one is still in use anywhere, keep."""
        done = set(self.generations()) | {keep}
        for old in sorted(self._begun(), reverse=True):
            if old < gen and old not in done:
                with contextlib.suppress(FileNotFoundError):   # (dropped meanwhile)
                    os.replace(self.path(old, name), tmp)
                    return

    def retire(self, keep):
        """Take every generation but keep out of use (their manifests
        removed), leaving their files for `write` to recycle."""
        for old in self.generations():
            if old != keep:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.manifest_path(old))

    def _begun(self):
        """The generations with a directory here."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return [int(n[4:]) for n in names if re.match(r"gen-\d{6}$", n)]

    def write_manifest(self, gen, doc):
        """Make generation gen complete: its manifest, tmp + fsync + rename +
        fsync of the directory."""
        final = self.manifest_path(gen)
        tmp = final + ".tmp.%d" % os.getpid()
        os.makedirs(self.root, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(json.dumps(doc, separators=(",", ":")))    # the C encoder: one string
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.root)

    def generations(self):
        """The generations with a manifest here, newest first."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted((int(m.group(1)) for m in map(_MANIFEST.match, names) if m), reverse=True)

    def highest(self):
        """The highest generation begun here (complete or not, refused too), or 0."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return 0
        return max((int(m.group(1)) for m in (re.match(r"gen-(\d{6})", n) for n in names) if m),
                   default=0)

    def files(self, gen):
        """The finished files of generation gen here (no temporaries)."""
        try:
            return sorted(n for n in os.listdir(self.gen_dir(gen)) if ".tmp." not in n)
        except FileNotFoundError:
            return []

    def holds(self, gen, name, nbytes):
        """Whether generation gen's file name is here whole (its size nbytes)."""
        try:
            return os.path.getsize(self.path(gen, name)) == nbytes
        except OSError:
            return False

    def manifest(self, gen):
        """Generation gen's manifest; CheckpointError if it is unreadable."""
        path = self.manifest_path(gen)
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            raise CheckpointError("%s: unreadable manifest: %s" % (path, e)) from None

    def read(self, gen, name, nbytes, crc):
        """Generation gen's file name, checked against its size and crc32
        (None: written without one, only the size is checked);
        CheckpointError if it is missing, short or its checksum fails."""
        path = self.path(gen, name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise CheckpointError("%s: %s" % (path, e.strerror or e)) from None
        if len(data) != nbytes:
            raise CheckpointError("%s: %d bytes, the manifest says %d" % (path, len(data), nbytes))
        got = crc if crc is None else zlib.crc32(data)
        if got != crc:
            raise CheckpointError("%s: checksum %08x, the manifest says %08x (the file is "
                                  "corrupt)" % (path, got, crc))
        return data

    def read_into(self, gen, name, nbytes, crc, sinks):
        """Read generation gen's file name into the writable buffers sinks
        yields, in turn, checking its size and crc32 (None: only the size;
        CheckpointError)."""
        path = self.path(gen, name)
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if size != nbytes:
                    raise CheckpointError("%s: %d bytes, the manifest says %d"
                                          % (path, size, nbytes))
                got = 0 if crc is not None else None
                for sink in sinks:
                    view, done = memoryview(sink).cast("B"), 0
                    while done < len(view):
                        n = f.readinto(view[done:])
                        if not n:
                            raise CheckpointError("%s: ends after %d bytes" % (path, done))
                        done += n
                    if crc is not None:
                        got = zlib.crc32(view, got)
        except OSError as e:
            raise CheckpointError("%s: %s" % (path, e.strerror or e)) from None
        if got != crc:
            raise CheckpointError("%s: checksum %08x, the manifest says %08x (the file is "
                                  "corrupt)" % (path, got, crc))

    def refuse(self, gen):
        """Take generation gen out of use: its manifest is renamed *.refused."""
        with contextlib.suppress(OSError):
            os.replace(self.manifest_path(gen), self.manifest_path(gen) + REFUSED)

    def drop(self, keep, background=False):
        """Remove every generation not in keep, those begun and never finished
        too (the manifest first, refused ones too, so none is ever seen half
        removed); with background, their files in a thread (unlinking large
        files takes a while, and no one looks at a directory without a manifest)."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return
        for name in names:
            m = re.match(r"gen-(\d{6})(\.json(%s)?)?$" % re.escape(REFUSED), name)
            if m and int(m.group(1)) not in keep and m.group(2):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.root, name))
        old = [os.path.join(self.root, n) for n in names
               if re.match(r"gen-\d{6}$", n) and int(n[4:]) not in keep]
        if background:
            threading.Thread(target=_remove_all, args=(old,), daemon=True).start()
        else:
            _remove_all(old)

    def remove(self):
        """Remove everything under root, root too."""
        shutil.rmtree(self.root, ignore_errors=True)


def _remove_all(paths):
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
