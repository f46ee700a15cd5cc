"""A job's memory and CPU limits: what it asked, the server's default and maximum, and
what the host has. Pure: the caller passes the host's totals in."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from nai_server.core.spec import JobSpec
from nai_server.core.units import format_size

N = TypeVar("N", int, float)


def _cpus(count: float) -> str:
    return f"{count:g} CPU" + ("" if count == 1 else "s")


def _pick(asked: N | None, default: N | None, maximum: N | None, have: N, key: str,
          setting: str, show: Callable[[N], str]) -> N | None:
    if asked is None:  # the default, within the maximum; none: the maximum, if any
        value = default if default is not None else maximum
        return value if maximum is None or value is None else min(value, maximum)
    if not asked > 0:  # 0 or NaN: a cgroup without this limit, or one never set up
        raise ValueError(f"{key}: {asked!r} asked; it must be more than 0")
    if maximum is not None and asked > maximum:
        raise ValueError(f"{key}: {show(asked)} asked, but jobs may have at most "
                         f"{show(maximum)} on this server (jobs.{setting}); ask for less")
    if asked > have:
        raise ValueError(f"{key}: {show(asked)} asked, but this server has "
                         f"{show(have)}; ask for less")
    return asked


def with_limits(spec: JobSpec, *, host_memory: int, host_cpus: int,
                default_memory: int | None = None, max_memory: int | None = None,
                default_cpus: float | None = None, max_cpus: float | None = None) -> JobSpec:
    """The spec with the limits the job runs under filled in; ValueError naming the
    field when it asks for more than the server allows or has."""
    memory, cpus = limits(spec.memory, spec.cpus, host_memory=host_memory,
                          host_cpus=host_cpus, default_memory=default_memory,
                          max_memory=max_memory, default_cpus=default_cpus, max_cpus=max_cpus)
    return dataclasses.replace(spec, memory=memory, cpus=cpus)


def limits(memory: int | None, cpus: float | None, *, host_memory: int, host_cpus: int,
           default_memory: int | None = None, max_memory: int | None = None,
           default_cpus: float | None = None, max_cpus: float | None = None
           ) -> tuple[int | None, float | None]:
    """`with_limits` for what is not a job spec (a service's replicas)."""
    return (_pick(memory, default_memory, max_memory, host_memory, "memory", "max_memory",
                  format_size),
            _pick(cpus, default_cpus, max_cpus, float(host_cpus), "cpus", "max_cpus", _cpus))
