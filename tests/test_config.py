"""Configuration parsing and its messages."""
import pytest

from libdsm import config
from libdsm.errors import ConfigError


def test_defaults_and_block_size():
    cfg = config.resolve(4096, environ={})
    assert cfg["size"] == 64 << 20 and cfg["block_pages"] == (64 << 20) // 4096 // 4096


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
    ({"DSM_LOCKS": "0"}, "DSM_LOCKS"),
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
    with pytest.raises(ConfigError, match="DSM_WAIT must be 'reply' or 'yield', got 'spin'"):
        config.resolve(4096, environ={"DSM_WAIT": "spin"})


def test_spin_defaults_to_off_when_ranks_outnumber_cpus():
    import os
    cpus = os.cpu_count()
    assert config.resolve(4096, environ={}, ranks_here=cpus)["spin_us"] == config.SPIN_US
    assert config.resolve(4096, environ={}, ranks_here=cpus + 1)["spin_us"] == 0
    assert config.resolve(4096, environ={"DSM_SPIN_US": "7"}, ranks_here=99)["spin_us"] == 7
