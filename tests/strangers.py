"""Connections that are not a rank: idle, trickling, garbage and fuzzed ones.

`Strangers` keeps connections open against listeners (closed on exit);
`fuzz` runs many short ones, each closed after its payload.  A failing fuzz
run prints its seed; ``DSM_FUZZ_SEED`` replays it.
"""
import os
import random
import socket
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from libdsm_services import wire

HELLO = struct.Struct("!4sHH16sH")      # wire._HELLO: what a stranger would copy


class Strangers:
    """Context manager: idle, trickling and garbage connections to (host, port)s."""

    def __init__(self):
        self.socks = []
        self.stop = threading.Event()
        self.threads = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(5)
        for s in self.socks:
            s.close()
        return False

    def _open(self, addr):
        s = socket.create_connection(addr)
        self.socks.append(s)
        return s

    def idle(self, addr):
        """Connect and say nothing; return the socket."""
        return self._open(addr)

    def garbage(self, addr):
        """Send bytes that are no handshake, and stay; return the socket."""
        s = self._open(addr)
        s.sendall(b"GET / HTTP/1.0\r\nHost: dsm\r\n\r\n")
        return s

    def trickle(self, addr, every=0.5):
        """Send one byte of a plausible hello every `every` seconds, until the end (or
        the listener drops it); return the socket."""
        s = self._open(addr)
        hello = HELLO.pack(wire.MAGIC, wire.PROTOCOL_MAJOR, 0, b"\0" * 16, 0)

        def drip():
            for byte in hello:
                if self.stop.wait(every):
                    return
                try:
                    s.send(bytes([byte]))
                except OSError:
                    return          # dropped: what we expect
        t = threading.Thread(target=drip, daemon=True)
        t.start()
        self.threads.append(t)
        return s

    def all_kinds(self, addr):
        """One stranger of each kind; return their sockets."""
        return [self.idle(addr), self.garbage(addr), self.trickle(addr)]


def wait_dropped(socks):
    """Wait until the listener has closed each of these connections (the test's own
    timeout bounds the wait): what a stranger sees once it was refused."""
    for s in socks:
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass                # reset: refused with our bytes unread


def payloads(rng):
    """One fuzz payload of each kind, drawn with rng: (name, bytes)."""
    nonce = bytes(rng.getrandbits(8) for _ in range(16))
    hello = HELLO.pack(wire.MAGIC, wire.PROTOCOL_MAJOR, wire.PROTOCOL_MINOR, nonce,
                       rng.randrange(1 << 16))
    return [
        ("empty", b""),
        ("random", bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))),
        ("truncated hello", hello[:rng.randrange(1, HELLO.size)]),
        ("wrong major", HELLO.pack(wire.MAGIC, wire.PROTOCOL_MAJOR + 1 + rng.randrange(9), 0,
                                   nonce, 0)),
        ("bad mac", hello + bytes(rng.getrandbits(8) for _ in range(32))),
        ("huge length", wire.Message.HEADER.pack(wire.Message.REGISTER, 0xFFFFFFFF) + b"{"),
    ]


def _one(addr, payload):
    """Connect, send, half-close, read until the listener closes (the test's own timeout
    bounds the wait: a listener that keeps a connection it can never complete fails it)."""
    with socket.create_connection(addr) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):
                pass
        except OSError:
            pass            # reset, or a broken pipe: refused before we finished


def fuzz(addrs, count, seed=None, workers=8):
    """`count` connections spread over addrs, every kind of payload in turn, each read
    until the listener closed it.  Returns (seed, connections made); the seed is also
    printed on stderr first, for a run the test's timeout ends."""
    seed = int(os.environ.get("DSM_FUZZ_SEED", seed if seed is not None else
                              random.randrange(1 << 32)))
    print("fuzz seed %d (DSM_FUZZ_SEED replays it)" % seed, file=sys.stderr, flush=True)
    rng = random.Random(seed)
    jobs = []
    while len(jobs) < count:
        for name, data in payloads(rng):
            jobs.append((addrs[len(jobs) % len(addrs)], name, data))
    with ThreadPoolExecutor(workers) as pool:
        done = list(pool.map(lambda j: _one(j[0], j[2]), jobs[:count]))
    return seed, len(done)
