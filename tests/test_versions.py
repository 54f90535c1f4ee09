"""Versioned pieces: the wire protocol and the compiled core."""
import socket
import threading

import pytest

from libdsm_services import wire
import libdsm
from libdsm import _binding
from libdsm.errors import CoreVersionError

SECRET = b"s" * wire.SECRET_BYTES


def shake(version_a, version_b):
    """Handshake over a socketpair with the two versions; each side's result
    (a (peer_ident, peer_minor) tuple or the exception)."""
    a, b = socket.socketpair()
    out = {}

    def side(name, sock, role, version):
        try:
            out[name] = wire.handshake(sock, SECRET, role, 7 if name == "a" else 9, version)
        except Exception as e:      # noqa: BLE001 - the test inspects it
            out[name] = e
        finally:
            sock.close()
    t = threading.Thread(target=side, args=("b", b, wire.ROLE_ACCEPT, version_b))
    t.start()
    side("a", a, wire.ROLE_CONNECT, version_a)
    t.join()
    return out["a"], out["b"]


@pytest.mark.timeout(20)
def test_a_newer_minor_interoperates_and_learns_the_older_one():
    ours = (wire.PROTOCOL_MAJOR, wire.PROTOCOL_MINOR)
    newer = (wire.PROTOCOL_MAJOR, wire.PROTOCOL_MINOR + 1)
    a, b = shake(newer, ours)
    assert a == (9, wire.PROTOCOL_MINOR)        # the newer side sees it must talk down
    assert b == (7, wire.PROTOCOL_MINOR + 1)


@pytest.mark.timeout(20)
def test_a_different_major_is_refused_naming_both():
    ours = (wire.PROTOCOL_MAJOR, wire.PROTOCOL_MINOR)
    other = (wire.PROTOCOL_MAJOR + 1, 0)
    a, b = shake(other, ours)
    for result in (a, b):
        assert isinstance(result, wire.VersionMismatch)
    assert "we speak %d.0, the peer speaks %d.%d" % (other[0], ours[0], ours[1]) in str(a)
    assert "same libdsm version" in str(a)


def test_a_stale_core_names_both_versions_and_the_fix():
    with pytest.raises(CoreVersionError) as e:
        _binding.check_core_version("0.0.1")
    assert "built for libdsm 0.0.1" in str(e.value)
    assert "this is libdsm %s" % libdsm.__version__ in str(e.value)
    assert "make build" in str(e.value)


def test_the_built_core_is_stamped_with_the_package_version():
    assert _binding.build_version() == libdsm.__version__
    _binding.check_core_version()


def test_dsmexec_version_prints_every_piece():
    import subprocess
    import sys
    from conftest import DSMEXEC
    p = subprocess.run([sys.executable, DSMEXEC, "--version"], capture_output=True, text=True)
    assert p.returncode == 0
    assert p.stdout.splitlines() == [
        "dsmexec %s" % libdsm.__version__, "wire protocol %d.%d" % (wire.PROTOCOL_MAJOR, wire.PROTOCOL_MINOR),
        "C core %d.%d" % _binding.core_version()]
