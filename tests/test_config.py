"""Configuration parsing and its messages."""
import pytest

from libdsm import config
from libdsm.errors import ConfigError


HOST = (24 << 30, 20 << 30)         # memory + swap, available: a 24 GiB host


def test_defaults_and_block_size():
    cfg = config.resolve(4096, environ={})
    assert cfg["size"] == 1 << 30 and cfg["block_pages"] == (1 << 30) // 4096 // 4096


def test_environment_and_arguments():
    env = {"DSM_SIZE": "1G", "DSM_BLOCK_PAGES": "8", "DSM_DEBUG": "1"}
    cfg = config.resolve(4096, environ=env, hold_us=7)
    assert (cfg["size"], cfg["block_pages"], cfg["debug"], cfg["hold_us"]) == (1 << 30, 8,
                                                                                True, 7)
    assert config.resolve(4096, environ=env, size=8192)["size"] == 8192


@pytest.mark.parametrize("text,value", [("4096", 4096), ("64K", 65536), ("2M", 2 << 20),
                                        ("1GiB", 1 << 30), ("3g", 3 << 30)])
def test_sizes(text, value):
    assert config.parse_size(text) == value


@pytest.mark.parametrize("env,match", [
    ({"DSM_SIZE": "lots"}, "DSM_SIZE='lots' is not valid"),
    ({"DSM_SIZE": "1000"}, "multiple of the page size"),
    ({"DSM_BASE": "0x1001"}, "multiple of the page size"),
    ({"DSM_BLOCK_PAGES": "0"}, "at least 1"),
    ({"DSM_LOCKS": "0"}, r"locks=/DSM_LOCKS must be 1\.\.16777216, got 0"),
])
def test_bad_values_say_how_to_fix(env, match):
    with pytest.raises(ConfigError, match=match):
        config.resolve(4096, environ=env)


def test_unknown_argument():
    with pytest.raises(TypeError, match="unexpected"):
        config.resolve(4096, environ={}, sise=1)


def test_waiting_threads_read_their_replies_when_every_thread_has_a_cpu():
    import os
    cpus = os.cpu_count()
    assert config.resolve(4096, environ={}, ranks_here=max(1, cpus // 2))["wait"] == \
        ("reply" if cpus >= 2 else "yield")
    assert config.resolve(4096, environ={}, ranks_here=cpus // 2 + 1)["wait"] == "yield"
    assert config.resolve(4096, environ={"DSM_WAIT": "reply"}, ranks_here=99)["wait"] == "reply"
    with pytest.raises(ConfigError,
                       match="wait=/DSM_WAIT must be 'reply' or 'yield', got 'spin'"):
        config.resolve(4096, environ={"DSM_WAIT": "spin"})


def test_spin_defaults_to_off_when_ranks_outnumber_cpus():
    import os
    cpus = os.cpu_count()
    assert config.resolve(4096, environ={}, ranks_here=cpus)["spin_us"] == config.SPIN_US
    assert config.resolve(4096, environ={}, ranks_here=cpus + 1)["spin_us"] == 0
    assert config.resolve(4096, environ={"DSM_SPIN_US": "7"}, ranks_here=99)["spin_us"] == 7


@pytest.mark.parametrize("given,value", [
    (dict(size="1G"), ("size", 1 << 30)), (dict(size=" 256m "), ("size", 256 << 20)),
    (dict(size=8192), ("size", 8192)), (dict(base="0x300000000000"), ("base", 0x300000000000)),
    (dict(twin_limit="2M"), ("twin_limit", 2 << 20)), (dict(heartbeat_s=3), ("heartbeat_s", 3)),
    (dict(consistency="Release"), ("consistency", "release")), (dict(debug=True), ("debug", True)),
    (dict(connect_timeout=1.5), ("connect_timeout", 1.5)),
])
def test_init_keywords_take_strings_as_their_variables_do(given, value):
    assert config.resolve(4096, environ={}, memory=HOST, **given)[value[0]] == value[1]


@pytest.mark.parametrize("given,match", [
    (dict(size=[1]), r"init\(\) option size=/DSM_SIZE takes a byte count: an int or a string "
                     r"such as '1G', got list \[1\]"),
    (dict(size="lots"), r"option size=/DSM_SIZE takes a byte count.*got 'lots'"),
    (dict(size=1.5), r"size=/DSM_SIZE takes .* got float 1\.5"),
    (dict(locks="8"), r"option locks=/DSM_LOCKS takes an int, got str '8'"),
    (dict(locks=True), r"locks=/DSM_LOCKS takes an int, got bool True"),
    (dict(debug=1), r"option debug=/DSM_DEBUG takes True or False, got int 1"),
    (dict(heartbeat_s="5"), r"heartbeat_s=/DSM_HEARTBEAT_S takes seconds"),
    (dict(wait=1), r"wait=/DSM_WAIT takes 'reply' or 'yield', got int 1"),
    (dict(consistency="weak"), r"consistency=/DSM_CONSISTENCY must be 'sequential' or "
                               r"'release', got 'weak'"),
    (dict(readahead=0), r"readahead=/DSM_READAHEAD must be 1\.\.4096, got 0"),
])
def test_init_keywords_of_the_wrong_type_or_value_name_the_option(given, match):
    with pytest.raises(ConfigError, match=match):
        config.resolve(4096, environ={}, memory=HOST, **given)


def test_init_signature_lists_every_option_with_a_type():
    import inspect

    import libdsm
    params = inspect.signature(libdsm.init).parameters
    assert set(params) == set(config.DEFAULTS)
    assert all(p.kind is p.KEYWORD_ONLY and p.default is None and p.annotation
               for p in params.values())
    with pytest.raises(TypeError):
        libdsm.init(sise="1G")


def test_a_region_beyond_the_host_is_refused_at_init():
    with pytest.raises(ConfigError, match=r"a region of 1 TiB \(size=/DSM_SIZE\) is more than "
                                          r"this host can back: 24 GiB of memory and swap"):
        config.resolve(4096, environ={"DSM_SIZE": "1T"}, memory=HOST)
    with pytest.raises(ConfigError, match=r"a region of 20 GiB .* page table of 360 MiB in each "
                                          r"of the 64 ranks on this host, more than the 20 GiB"):
        config.resolve(4096, environ={}, size="20G", ranks_here=64, memory=HOST)
    assert config.resolve(4096, environ={}, size="20G", memory=HOST)["size"] == 20 << 30


def test_a_region_beyond_this_host_is_refused_before_it_is_mapped():
    from dsmrun import run_code
    too_big = (config.host_memory()[0] >> 30) + 1 << 30
    p = run_code("import libdsm\nlibdsm.init(size=%d)\n" % too_big)
    assert p.returncode == 1
    assert "ConfigError: a region of %s (size=/DSM_SIZE) is more than this host can back" \
        % config.human(too_big) in p.stderr, p.stderr
