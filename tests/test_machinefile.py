"""The machine-file parser and the local-host test."""
import socket

import pytest

from libdsm_services.machinefile import Host, MachineFileError, is_local, parse, parse_line


def write(tmp_path, text):
    path = tmp_path / "machines"
    path.write_text(text)
    return str(path)


def test_hosts_in_order_with_comments_blanks_users_and_repeats(tmp_path):
    path = write(tmp_path, "# cluster\n\nnode1\n  dsm@node2   # trailing comment\nnode1\n\t\n")
    assert parse(path) == [
        Host(None, "node1", 3, "node1"),
        Host("dsm", "node2", 4, "  dsm@node2   # trailing comment"),
        Host(None, "node1", 5, "node1"),
    ]


def test_target_keeps_the_user():
    assert Host("dsm", "n2", 1, "").target == "dsm@n2"
    assert Host(None, "n2", 1, "").target == "n2"


@pytest.mark.parametrize("text", ["10.0.0.7", "::1", "node-3.example.org", "a_b", "u.x@h"])
def test_accepted_entries(text):
    assert parse_line(text)[1] == text.rpartition("@")[2]


@pytest.mark.parametrize("text, reason", [
    ("node1 node2", "whitespace inside an entry"),
    ("@node1", "empty user"),
    ("dsm@", "empty host"),
    ("node;rm", "bad host name"),
    ("-oProxyCommand=x", "bad host name"),
    ("us$er@node", "bad user name"),
    ("-l@node", "bad user name"),
])
def test_bad_syntax_is_refused_with_the_reason(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_line(text)


def test_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "node1\n# fine\nnode 2\n")
    with pytest.raises(MachineFileError) as e:
        parse(path)
    assert (e.value.path, e.value.lineno) == (path, 3)
    assert str(e.value).startswith("machine file %s, line 3: 'node 2': whitespace" % path)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("text", ["", "\n\n", "# only\n   # comments\n"])
def test_a_file_without_hosts_is_an_error(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(MachineFileError, match="names no host") as e:
        parse(path)
    assert e.value.lineno is None and path in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(MachineFileError, match="cannot read it: No such file or directory"):
        parse(str(tmp_path / "absent"))


def test_binary_file_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "machines"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(MachineFileError, match="cannot read it"):
        parse(str(path))


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", socket.gethostname()])
def test_local_hosts(host):
    assert is_local(host)


@pytest.mark.parametrize("host", ["node1.invalid", "10.1.2.3", "127.0.0.2.example"])
def test_other_hosts_are_remote(host):
    assert not is_local(host)
