"""What discovering client commands (`nai.client_commands` entry points) costs each
`nai` call: a built-in command (`nai server list`, no server reached) run as a fresh
process with discovery (every installed distribution's metadata read, as before nai
read it only when needed) against the same command without it (the default now for
built-ins). Runs alternate; prints the median wall time of each, their ratio, and
the in-process time of one discovery with the number of distributions installed.

Then `nai --version` as it runs now (answered before the parser is built) against the
old path (every command's module imported to build the parser, then parsed), each a
fresh process, alternating; and `nai --help` alone, for scale.

With `--array N`: N jobs submitted to a personal server (drained, so none runs) by one
`nai submit --array 0-(N-1)` against a loop of N `nai submit` processes, as a shell
loop would; prints each wall time and their ratio.

    .venv/bin/python bench/client_commands.py [--runs N] [--array N]
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


def array_submit(count: int) -> None:
    """`nai submit --array` against a loop of `nai submit`, on a drained personal server
    of this checkout's code (PYTHONPATH), each from a fresh process as a user runs it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": root, "XDG_CONFIG_HOME": f"{tmp}/config",
               "XDG_CACHE_HOME": f"{tmp}/cache", "XDG_DATA_HOME": f"{tmp}/data",
               "XDG_RUNTIME_DIR": f"{tmp}/run",
               "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"}
        os.makedirs(f"{tmp}/run")
        os.makedirs(f"{tmp}/job")
        with open(f"{tmp}/job/nai.yaml", "w") as spec:
            spec.write("command: 'true'\ngpus: 0\n")
        nai = [sys.executable, "-m", "nai_tui.cli"]

        def run(*args: str, admin: bool = False) -> None:
            argv = [os.path.join(os.path.dirname(sys.executable), "nai-admin")] if admin \
                else nai
            subprocess.run([*argv, *args], env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=120)

        run("up")
        try:
            run("drain", "on", admin=True)  # queue only: nothing starts
            run("submit", f"{tmp}/job")  # warm: the hash cache, the page cache
            started = time.perf_counter()
            for _ in range(count):
                run("submit", f"{tmp}/job")
            loop = time.perf_counter() - started
            started = time.perf_counter()
            run("submit", f"{tmp}/job", "--array", f"0-{count - 1}")
            array = time.perf_counter() - started
        finally:
            subprocess.run([*nai, "down"], env=env, capture_output=True, timeout=120)
    print(f"{count} jobs submitted to a personal server:")
    print(f"  {f'{count} `nai submit` processes':<28} {loop:8.2f} s")
    print(f"  {'one `nai submit --array`':<28} {array:8.2f} s")
    print(f"  {'ratio array/loop':<28} {array / loop:8.3f}  ({loop / array:.0f}x faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--array", type=int, metavar="N",
                        help="only: N jobs by one `nai submit --array` against N submits")
    args = parser.parse_args()
    if args.array:
        array_submit(args.array)
        return
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
