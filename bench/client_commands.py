"""What discovering client commands (`nai.client_commands` entry points) costs each
`nai` call: a built-in command (`nai server list`, no server reached) run as a fresh
process with discovery (every installed distribution's metadata read, as before nai
read it only when needed) against the same command without it (the default now for
built-ins). Runs alternate; prints the median wall time of each, their ratio, and
the in-process time of one discovery with the number of distributions installed.

Then `nai --version` as it runs now (answered before the parser is built) against the
old path (every command's module imported to build the parser, then parsed), each a
fresh process, alternating; and `nai --help` alone, for scale.

    .venv/bin/python bench/client_commands.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

SNIPPET = """
import sys
from nai_tui import cli
if sys.argv[1] == "eager":  # the old --version: the whole parser built first
    cli.build_parser(sys.argv[2:]).parse_args(sys.argv[2:])
from nai_tui.cli import plugin_commands
if sys.argv[1] == "on":  # every call reads the entry points, built-in or not
    plugin_commands.command_in = lambda argv: None
raise SystemExit(cli.main(sys.argv[2:]))
"""
COMMAND = ["server", "list"]


def one(mode: str, env: dict[str, str], command: list[str] = COMMAND) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", SNIPPET, mode, *command], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def version_flag(runs: int, env: dict[str, str]) -> None:
    """`nai --version` now against the old eager path, and `nai --help`, medians."""
    times: dict[str, list[float]] = {"eager": [], "now": [], "help": []}
    for _ in range(runs):
        for mode in ("eager", "now"):
            times[mode].append(one(mode, env, ["--version"]))
        times["help"].append(one("now", env, ["--help"]))
    eager, now, help_ = (statistics.median(times[m]) for m in ("eager", "now", "help"))
    print(f"`nai --version`, median of {runs} fresh processes each:")
    print(f"  old (parser built first)  {eager * 1000:8.1f} ms")
    print(f"  now (answered first)      {now * 1000:8.1f} ms")
    print(f"  ratio now/old             {now / eager:8.3f}")
    print(f"`nai --help` (builds the whole parser): {help_ * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_CONFIG_HOME": tmp, "XDG_CACHE_HOME": tmp}
        one("off", env)  # warm the page cache and the bytecode
        times: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(args.runs):
            for mode in ("on", "off"):
                times[mode].append(one(mode, env))
    started = time.perf_counter()
    found = list(metadata.entry_points(group="nai.client_commands"))
    scan = time.perf_counter() - started
    dists = sum(1 for _ in metadata.distributions())
    on, off = (statistics.median(times[m]) for m in ("on", "off"))
    print(f"`nai {' '.join(COMMAND)}`, median of {args.runs} fresh processes each:")
    print(f"  with discovery     {on * 1000:8.1f} ms")
    print(f"  without discovery  {off * 1000:8.1f} ms")
    print(f"  ratio              {on / off:8.3f}  (difference {(on - off) * 1000:.1f} ms)")
    print(f"one discovery in process: {scan * 1000:.1f} ms over {dists} distributions "
          f"({len(found)} client commands)")
    with tempfile.TemporaryDirectory() as tmp:
        version_flag(args.runs, {**os.environ, "XDG_CONFIG_HOME": tmp, "XDG_CACHE_HOME": tmp})


if __name__ == "__main__":
    main()
