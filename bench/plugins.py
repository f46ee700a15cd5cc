"""Submit latency with five submit rules and three notifiers enabled vs none.

Two in-process services on fake GPUs, one with the plugins (the shipped
default_time_limit and max_gpus_per_user, three pass-through rules, three notifiers),
one without; submits alternate between them through the in-process API. Prints the
p50 of each and the ratio (target: at most 1.1).

    .venv/bin/python bench/plugins.py [--submits N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from nai_plugins.limits import default_time_limit, max_gpus_per_user
from nai_server.api import create_app
from nai_server.config import PluginConfig
from nai_server.plugins import PluginRegistry
from nai_server.plugins.contracts import Kind, hookimpl
from nai_server.testing import AsPeer, make_service


class PassRule:
    @hookimpl
    def nai_submit_rule(self, submission: Any, options: Any) -> None:
        return None


class Quiet:
    @hookimpl
    def nai_job_event(self, event: Any, options: Any) -> None:
        return None


def registry() -> PluginRegistry:
    objects: list[tuple[str, Kind, object]] = [
        ("default_time_limit", Kind.SUBMIT_RULE, default_time_limit),
        ("max_gpus_per_user", Kind.SUBMIT_RULE, max_gpus_per_user),
        *((f"pass{i}", Kind.SUBMIT_RULE, PassRule()) for i in range(3)),
        *((f"notify{i}", Kind.NOTIFIER, Quiet()) for i in range(3))]
    config = {name: PluginConfig() for name, _, _ in objects}
    config["default_time_limit"] = PluginConfig(options={"time_limit": "4h"})
    config["max_gpus_per_user"] = PluginConfig(options={"max_gpus": 2})
    return PluginRegistry.from_objects(config, objects)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        services = {"none": make_service(Path(tmp) / "a", plugins=PluginRegistry.empty()),
                    "plugins": make_service(Path(tmp) / "b", plugins=registry())}
        clients = {k: TestClient(AsPeer(create_app(s)), base_url="http://nai")
                   for k, s in services.items()}
        times: dict[str, list[float]] = {k: [] for k in clients}
        body = {"spec": {"command": "true", "gpus": 1}}
        for i in range(args.submits + 20):
            for name, client in clients.items():
                started = time.perf_counter()
                assert client.post("/v1/jobs", json=body).status_code == 201
                if i >= 20:  # warm-up
                    times[name].append(time.perf_counter() - started)
        for s in services.values():
            s.close()
    p50 = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"submit p50: none {p50['none']:.2f} ms, 5 rules + 3 notifiers "
          f"{p50['plugins']:.2f} ms, ratio {p50['plugins'] / p50['none']:.2f} (target <= 1.1)")


if __name__ == "__main__":
    main()
