"""The rank-to-rank handshake: the job handshake (`wire.Handshake`), then the
region layout each rank maps and the C core's protocol version, so that
ranks configured differently, or running different cores, fail at init
instead of corrupting memory or misreading each other's pages."""
import struct

from libdsm_services.wire import Handshake, WireError

LAYOUT = struct.Struct("!QQQQQQQ")
LAYOUT_NAMES = ("size", "base", "block_pages", "page_size", "core", "share", "vhosts")
"""The region as each rank maps it; ``core``: the C core's protocol
version, major << 16 | minor (the messages between ranks are the core's);
``share``: the index of DSM_SHARE's value in SHARES; ``vhosts``: DSM_VHOSTS."""
SHARES = ("rank", "host")
"""DSM_SHARE's values, as the layout carries them (libdsm.config.SHARES)."""


class LayoutMismatch(WireError):
    """An authenticated peer maps the region differently, or runs another
    core: ``name``, ``ours``, ``theirs``."""

    def __init__(self, name, ours, theirs, peer):
        self.name, self.ours, self.theirs, self.peer = name, ours, theirs, peer
        if name == "core":
            super().__init__("the C core differs: this rank has version %d.%d, rank %d has "
                             "%d.%d; install the same libdsm on every host"
                             % (ours >> 16, ours & 0xffff, peer, theirs >> 16, theirs & 0xffff))
        elif name == "share":
            super().__init__("the ranks share memory differently: this rank has DSM_SHARE=%s, "
                             "rank %d has DSM_SHARE=%s; give every rank the same share=/"
                             "DSM_SHARE" % (SHARES[ours], peer, SHARES[theirs]))
        elif name == "vhosts":
            super().__init__("the ranks group hosts differently: this rank has DSM_VHOSTS=%d, "
                             "rank %d has DSM_VHOSTS=%d; give every rank the same vhosts=/"
                             "DSM_VHOSTS" % (ours, peer, theirs))
        else:
            super().__init__("region %s differs: this rank has %#x, rank %d has %#x; give "
                             "every rank the same DSM_* settings" % (name, ours, peer, theirs))


def check_layout(ours, theirs, peer):
    """Raise LayoutMismatch for the first field of the two layouts that differs."""
    for name, a, b in zip(LAYOUT_NAMES, ours, theirs):
        if a != b:
            raise LayoutMismatch(name, a, b, peer)


class MeshHandshake(Handshake):
    """Two ranks: the handshake, ``check_peer(ident)`` (raises to refuse), the layout exchange.

    ``check_peer`` runs once the peer is authenticated, before any layout is
    sent; a LayoutMismatch is not a HandshakeError: the peer is a real rank.
    """

    def __init__(self, secret, role, ident, layout, check_peer=lambda ident: None):
        super().__init__(secret, role, ident)
        self.layout, self.check_peer = tuple(layout), check_peer

    def after_proof(self):
        self.check_peer(self.peer[0])
        self.out += LAYOUT.pack(*self.layout)
        return "layout", LAYOUT.size

    def _on_layout(self, data):
        check_layout(self.layout, LAYOUT.unpack(data), self.peer[0])
        return self.DONE

    STATES = {**Handshake.STATES, "layout": ("region layout", _on_layout)}
