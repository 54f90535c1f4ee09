"""Host-shared memory (DSM_SHARE=host): the ranks of a host map one memfd,
so that a page written by one is the page every other reads.

The lowest rank of the host creates the memfd (the region, then the C
core's control area of CTRL_BYTES) and hands it to the others with
SCM_RIGHTS over a Unix socket in the abstract namespace: nothing is left in
the file system, and the socket goes with the last process that has it
open.  Its name comes from the job's secret and the host; a rank proves it
is of the job with an HMAC of its rank under the secret, which the socket
never carries.

Ranks are grouped by a host key: their machine-file host, or with
DSM_VHOSTS=N one of N virtual hosts on it.  On several hosts the memfd also
holds the host's page states after the control area (the C core's
dsm_host_state_bytes), and the protocol of either consistency mode runs
between the hosts' leaders (docs/host-shared.md).
"""
import hashlib
import hmac
import os
import socket
import struct
import time

from libdsm import _binding
from libdsm.errors import PeerError

CTRL_BYTES = 4 << 20
"""The control area after the region (dsm_api.h's DSM_HOST_CTRL_BYTES): the
barrier, the locks, the ranks' mailboxes and the collectives' slots; its pages cost memory only
once touched."""
_RANK = struct.Struct("<I")


def host_keys(hostnames, vhosts=1):
    """Every rank's host key: the ranks of one key share one memfd.  With
    vhosts > 1 the ranks of each host, in rank order, are split into that
    many blocks of consecutive ranks, each a virtual host "name#k"."""
    if vhosts == 1:
        return list(hostnames)
    keys, seen = [], {}
    for host in hostnames:
        seen[host] = seen.get(host, 0) + 1
    placed = dict.fromkeys(seen, 0)
    for host in hostnames:
        keys.append("%s#%d" % (host, placed[host] * vhosts // seen[host]))
        placed[host] += 1
    return keys


def _proof(secret, rank):
    return hmac.new(secret, b"libdsm host memory, rank %d" % rank, hashlib.sha256).digest()


class Handover:
    """This rank's part in sharing the host's memfd.  Make it before the mesh
    is built (the lowest rank of the host starts listening then, so that the
    socket is there once the mesh says every rank is up), and call take()
    after: the memfd, the number of ranks on the host and this rank's index
    among them."""

    def __init__(self, ctx, nbytes, timeout, vhosts=1):
        keys = host_keys(ctx.hostnames if ctx else ["localhost"], vhosts)
        self.rank = ctx.rank if ctx else 0
        self.host = keys[self.rank]
        self.local = [r for r, k in enumerate(keys) if k == self.host]
        self.nhosts = len(set(keys))
        self.ctx, self.nbytes, self.timeout = ctx, nbytes, timeout
        self.size = nbytes + CTRL_BYTES + _binding.host_state_bytes(nbytes)
        self.memfd = self.listener = None
        if self.rank != self.local[0]:
            return
        self.memfd = os.memfd_create("libdsm-host", os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, self.size)
        if len(self.local) > 1:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(self._name())
            self.listener.listen(len(self.local))

    def _name(self):
        job = hashlib.sha256(self.ctx.secret).hexdigest()[:16]
        return "\0libdsm-%s-%s" % (job, self.host)

    def take(self):
        """(memfd, ranks on this host, this rank's index among them, hosts)."""
        index = self.local.index(self.rank)
        if self.rank == self.local[0]:
            try:
                if self.listener:
                    self._serve()
            finally:
                if self.listener:
                    self.listener.close()
            return self.memfd, len(self.local), index, self.nhosts
        return self._receive(), len(self.local), index, self.nhosts

    def _serve(self):
        """Give the memfd to every other rank of the host that proves it is one."""
        deadline = time.monotonic() + self.timeout
        waiting = set(self.local[1:])
        while waiting:
            self.listener.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                raise PeerError("host-shared memory: ranks %s of host %s did not come for "
                                "the memfd within %g s (DSM_CONNECT_TIMEOUT)"
                                % (sorted(waiting), self.host, self.timeout),
                                self.rank, self.host, peer=min(waiting)) from None
            with conn:
                conn.settimeout(max(0.001, deadline - time.monotonic()))
                hello = conn.recv(_RANK.size + 32, socket.MSG_WAITALL)
                if len(hello) != _RANK.size + 32:
                    continue
                (rank,) = _RANK.unpack_from(hello)
                if rank in waiting and hmac.compare_digest(hello[_RANK.size:],
                                                           _proof(self.ctx.secret, rank)):
                    socket.send_fds(conn, [b"m"], [self.memfd])
                    waiting.discard(rank)

    def _receive(self):
        """The memfd, from the lowest rank of the host."""
        first = self.local[0]
        fail = "host-shared memory: rank %d of host %s did not hand over the memfd" % (
            first, self.host)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            try:
                s.connect(self._name())
                s.sendall(_RANK.pack(self.rank) + _proof(self.ctx.secret, self.rank))
                _, fds, _, _ = socket.recv_fds(s, 1, 1)
            except socket.timeout:
                raise PeerError("%s within %g s (DSM_CONNECT_TIMEOUT)" % (fail, self.timeout),
                                self.rank, self.host, peer=first) from None
            except OSError as e:
                raise PeerError("%s: %s" % (fail, e), self.rank, self.host, peer=first) from None
        if len(fds) != 1 or os.fstat(fds[0]).st_size != self.size:
            for fd in fds:
                os.close(fd)
            raise PeerError("%s: it sent %d descriptors, not one memfd of %d bytes"
                            % (fail, len(fds), self.size), self.rank,
                            self.host, peer=first)
        return fds[0]
