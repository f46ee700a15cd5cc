"""The spec's `memory` and `cpus`, and the limits a job runs under (core.resources)."""

from __future__ import annotations

import pytest

from nai_server.core.resources import with_limits
from nai_server.core.spec import SpecError, parse_spec

GIB = 1 << 30


def test_memory_and_cpus_are_read_as_people_write_them() -> None:
    spec = parse_spec("command: python train.py\nmemory: 16G\ncpus: 4\n")
    assert (spec.memory, spec.cpus) == (16 * GIB, 4.0)
    spec = parse_spec("command: x\nmemory: 512MiB\ncpus: '0.5'\n")
    assert (spec.memory, spec.cpus) == (512 << 20, 0.5)
    assert parse_spec("command: x\n").memory is None


@pytest.mark.parametrize(("line", "says"), [
    ("memory: 16 gigs", "memory: must be a size like 16G, 512MiB or 64GiB, got '16 gigs'"),
    ("memory: 1M", "memory: must be from 16MiB to 1PiB, got '1M'"),
    ("memory: -5", "memory: must be a size like 16G"),
    ("cpus: 0", "cpus: must be a number of CPUs from 0.01 to 65536, e.g. 4 or 0.5, got 0"),
    ("cpus: many", "cpus: must be a number of CPUs"),
    ("cpus: .nan", "cpus: must be a number of CPUs"),
    ("cpus: true", "cpus: must be a number of CPUs"),
])
def test_bad_limits_name_the_line_and_the_forms(line: str, says: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(f"command: x\n{line}\n")
    assert str(caught.value).startswith(f"nai.yaml:2: {says}")


def test_the_server_fills_in_defaults_within_its_maximum() -> None:
    spec = parse_spec("command: x\n")
    host = {"host_memory": 64 * GIB, "host_cpus": 16}
    assert with_limits(spec, **host).memory is None
    filled = with_limits(spec, **host, default_memory=8 * GIB, default_cpus=2)
    assert (filled.memory, filled.cpus) == (8 * GIB, 2)
    capped = with_limits(spec, **host, max_memory=4 * GIB, default_memory=8 * GIB)
    assert capped.memory == 4 * GIB  # no default: the maximum is the limit
    assert with_limits(spec, **host, max_cpus=3).cpus == 3


def test_more_than_allowed_or_than_the_host_has_is_refused() -> None:
    spec = parse_spec("command: x\nmemory: 32G\ncpus: 8\n")
    with pytest.raises(ValueError, match=r"^memory: 32.0 GiB asked, but jobs may have at "
                                         r"most 16.0 GiB on this server \(jobs.max_memory\)"):
        with_limits(spec, host_memory=64 * GIB, host_cpus=16, max_memory=16 * GIB)
    with pytest.raises(ValueError, match=r"^memory: 32\.0 GiB asked, but this server has 24\.0"):
        with_limits(spec, host_memory=24 * GIB, host_cpus=16)
    with pytest.raises(ValueError, match=r"^cpus: 8 CPUs asked, but this server has 2 CPUs"):
        with_limits(spec, host_memory=64 * GIB, host_cpus=2)
