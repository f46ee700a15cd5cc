"""Registries: what a new dataset version costs.

Part A: a dataset of many files is pushed as version 1 (`nai dataset push`'s code,
`registry_commands.push_folder`) to a personal daemon, then 1% of its files change
and it is pushed as version 2. Bytes are counted where they leave the client: the
packed uploads (`ServerClient.upload_pack`). Prints each push's bytes as a fraction
of the dataset's size; version 1 is the baseline (about 1.0).

Target: version 2 sends at most 0.02 of the dataset's size.

Part B: how long a job on a 5 GB dataset (5 files of 1 GiB) takes to start, from
submit until its process runs (it writes a timestamp), against the same job without a
dataset, measured in turns. The dataset's files are links to the blobs, not copies.

Target: the job with the dataset starts within 2x the time of the job without.

Part C (`--scale`, alone: in process, no daemon): what the questions asked per
request cost under the service lock as the registry grows, at 100 and 5,000 entries
(5 versions each, 0.5 KB of metadata per version): a tree check through the registry
(`TreeAccess.via_registry`, for a tree no entry holds and for one an entry holds),
a lookup by name, `Registry.collect` with nothing to collect (every job's end), a
removal (a throwaway dataset made and removed, as a create/remove loop does) with
nothing and with one version marked elsewhere, and `Registry.collect` with one version
kept marked (a queued job uses it: every job's end while it waits). Each is timed
beside the way it was done before (walking deep copies of every entry), in the same
run; prints new/old.

Target: at 5,000 entries the tree check costs at most 0.05 of the old way.

    .venv/bin/python bench/registry.py [--files N] [--file-kib K] [--changed 0.01]
                                       [--big-gib 5] [--starts 5] [--skip-a|--skip-b]
    .venv/bin/python bench/registry.py --scale [--entries 100,5000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nai_tui.cli.registry_commands import push_folder
from nai_tui.remote.client import ServerClient
from nai_tui.remote.transports import local_http_client
from nai_tui.sync.hashcache import HashCache

BIN = Path(sys.executable).parent
TARGET = 0.02
START_TARGET = 2.0
GIB = 1 << 30


class PackMeter:
    """Counts the bytes of every upload pack a client sends."""

    def __init__(self) -> None:
        self.bytes = 0
        self.packs = 0

    def wrap(self, client: ServerClient) -> None:
        real = client.upload_pack

        def counted(stream: Iterable[bytes]) -> dict[str, Any]:
            self.packs += 1
            return real(self._count(stream))

        client.upload_pack = counted  # type: ignore[method-assign]

    def _count(self, stream: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in stream:
            self.bytes += len(chunk)
            yield chunk

    def take(self) -> tuple[int, int]:
        taken = (self.bytes, self.packs)
        self.bytes = self.packs = 0
        return taken


def make_dataset(root: Path, files: int, size: int) -> int:
    root.mkdir(parents=True)
    for i in range(files):
        sub = root / f"shard-{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"{i:06d}.bin").write_bytes(os.urandom(size))
    old = time.time() - 60  # past the hash cache's "racily clean" window
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    return files * size


def make_big_dataset(root: Path, files: int) -> int:
    """`files` files of 1 GiB each, written fast: a random 1 MiB block repeated, after a
    first MiB of each file's own (so that every file is a blob of its own)."""
    root.mkdir(parents=True)
    block = os.urandom(1 << 20)
    for i in range(files):
        with (root / f"part-{i}.bin").open("wb") as f:
            f.write(os.urandom(1 << 20))
            for _ in range(GIB // len(block) - 1):
                f.write(block)
    return files * GIB


def time_start(client: ServerClient, stamp_dir: Path, dataset: str | None) -> float:
    """Seconds from submit until the job's process has written its start timestamp."""
    stamp = stamp_dir / f"start-{time.monotonic_ns()}"
    spec: dict[str, Any] = {"command": f"date +%s.%N > {stamp}.tmp && mv {stamp}.tmp {stamp}",
                            "gpus": 0}
    if dataset:
        spec["dataset"] = dataset
    submitted = time.time()
    job = client.submit(spec=spec)
    deadline = time.monotonic() + 60
    while not stamp.exists():
        if time.monotonic() > deadline:
            sys.exit(f"job {job.id} did not start: {client.job(job.id)}")
        time.sleep(0.002)
    started = float(stamp.read_text())
    while client.job(job.id).state not in ("succeeded", "failed"):
        time.sleep(0.01)
    return started - submitted


def part_b(client: ServerClient, tmp: Path, gib: int, starts: int) -> None:
    data = tmp / "big"
    t0 = time.perf_counter()
    total = make_big_dataset(data, gib)
    made = time.perf_counter() - t0
    t0 = time.perf_counter()
    with HashCache(tmp / "hashes-b.sqlite") as cache:
        push_folder(client, "dataset", "big", data, cache=cache)
    pushed = time.perf_counter() - t0
    shutil.rmtree(data)  # the blob store has it now
    stamps = tmp / "stamps"
    stamps.mkdir()
    plain: list[float] = []
    with_data: list[float] = []
    for _ in range(starts):  # in turns, so that drift hits both alike
        plain.append(time_start(client, stamps, None))
        with_data.append(time_start(client, stamps, "big"))
    base, big = statistics.median(plain), statistics.median(with_data)
    ratio = big / base
    print(f"dataset: {gib} files x 1 GiB = {total / 1e9:.2f} GB (written in {made:.1f} s, "
          f"pushed in {pushed:.1f} s)")
    print(f"  job without a dataset: median {base * 1000:7.1f} ms to start over {starts} runs "
          f"(baseline)")
    print(f"  job with the dataset:  median {big * 1000:7.1f} ms to start over {starts} runs")
    verdict = "ok" if ratio <= START_TARGET else "MISSED"
    print(f"part B: start with a {total / 1e9:.1f} GB dataset takes {ratio:.2f}x the start "
          f"without (target <= {START_TARGET}x): {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--file-kib", type=int, default=256)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of files")
    parser.add_argument("--big-gib", type=int, default=5, help="part B: GiB (1 per file)")
    parser.add_argument("--starts", type=int, default=5, help="part B: starts of each job")
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip-a", action="store_true")
    skip.add_argument("--skip-b", action="store_true")
    skip.add_argument("--scale", action="store_true", help="part C only (in process)")
    parser.add_argument("--entries", default="100,5000", help="part C: registry sizes")
    args = parser.parse_args()
    if args.scale:
        part_c([int(n) for n in args.entries.split(",")])
        return
    tmp = Path(tempfile.mkdtemp(prefix="nai-bench-registry-"))
    sock = tmp / "nai.sock"
    daemon = subprocess.Popen(
        [str(BIN / "nai-server"), "run", "--personal", "--state-dir", str(tmp / "state"),
         "--socket", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if time.monotonic() > deadline or daemon.poll() is not None:
                sys.exit("nai-server did not start")
            time.sleep(0.02)
        if not args.skip_a:
            part_a(sock, tmp, args)
        if not args.skip_b:
            with ServerClient(local_http_client(sock), name="bench") as client:
                part_b(client, tmp, args.big_gib, args.starts)
    finally:
        daemon.terminate()
        daemon.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def part_a(sock: Path, tmp: Path, args: argparse.Namespace) -> None:
    """Bytes sent by a new version that changes a few files."""
    data = tmp / "dataset"
    total = make_dataset(data, args.files, args.file_kib * 1024)
    meter = PackMeter()
    with ServerClient(local_http_client(sock), name="bench") as client, \
            HashCache(tmp / "hashes.sqlite") as cache:
        meter.wrap(client)
        start = time.perf_counter()
        v1 = push_folder(client, "dataset", "bench", data, cache=cache)
        t1 = time.perf_counter() - start
        sent1, packs1 = meter.take()

        paths = sorted(p for p in data.rglob("*.bin"))
        changed = random.Random(1).sample(paths, max(1, round(len(paths) * args.changed)))
        for path in changed:
            path.write_bytes(os.urandom(args.file_kib * 1024))
        start = time.perf_counter()
        v2 = push_folder(client, "dataset", "bench", data, cache=cache)
        t2 = time.perf_counter() - start
        sent2, packs2 = meter.take()
    assert (v1.version, v2.version) == (1, 2)
    ratio = sent2 / total
    print(f"dataset: {args.files} files x {args.file_kib} KiB = {total / 1e6:.1f} MB; "
          f"version 2 changes {len(changed)} files ({args.changed:.0%})")
    print(f"  version 1: {sent1 / 1e6:9.2f} MB in {packs1} pack(s), {t1:6.2f} s, "
          f"{sent1 / total:.4f} of the dataset (baseline)")
    print(f"  version 2: {sent2 / 1e6:9.2f} MB in {packs2} pack(s), {t2:6.2f} s, "
          f"{ratio:.4f} of the dataset")
    verdict = "ok" if ratio <= TARGET else "MISSED"
    print(f"part A: new version sends {ratio:.4f} of the dataset "
          f"(target <= {TARGET}): {verdict}")


SCALE_TARGET = 0.05


def _old_via_registry(store: Any, caller: Any, tree_id: str) -> bool:
    """The tree check as it was: every entry deep-copied, then walked."""
    from nai_server.core import registry_rules as rules
    return any(rules.reads_tree(caller, doc, tree_id) for kind in rules.KINDS
               for doc in store.list_registry_entries(kind))


def _old_get(store: Any, kind: str, name: str) -> Any:
    """A lookup by name as it was: TinyDB's query over the table, then a deep copy."""
    import copy

    from tinydb import Query
    doc = store._registry(kind).get(Query().name == name)
    return copy.deepcopy(dict(doc)) if doc is not None else None


def _old_registry(store: Any, lock: Any) -> Any:
    """A Registry whose remove and collect decide as they did before: from deep copies
    of every entry (`plan_removal` and `collectable` over the whole registry)."""
    from nai_server.app.registry import Registry
    from nai_server.core import registry_rules as rules

    class OldRegistry(Registry):
        def _all_entries(self) -> list[dict[str, Any]]:
            return [d for kind in rules.KINDS for d in self.store.list_registry_entries(kind)]

        def remove(self, caller: Any, kind: Any, name: str, selector: Any = None) -> Any:
            with self.lock:
                doc = self._writable(caller, kind, name, "remove")
                numbers = [v["version"] for v in doc["versions"]]
                plan = rules.plan_removal(self._all_entries(), kind, name, numbers,
                                          self._active_jobs())
                if plan.entry_removed:
                    self.store.remove_registry_entry(kind, name)
                else:
                    self.store.put_registry_entry(kind, rules.apply_removal(doc, plan))
                self.collect()
            return plan

        def collect(self) -> int:
            dropped = 0
            with self.lock:
                while True:
                    if not self.store.registry_has_marked():
                        return dropped
                    entries = self._all_entries()
                    due = rules.collectable(entries, self._active_jobs())
                    if not due:
                        return dropped
                    for doc in entries:
                        numbers = due.get((doc["kind"], doc["name"]))
                        if not numbers:
                            continue
                        dropped += len(numbers)
                        doc["versions"] = [v for v in doc["versions"]
                                           if v["version"] not in numbers]
                        if doc["versions"]:
                            self.store.put_registry_entry(doc["kind"], doc)
                        else:
                            self.store.remove_registry_entry(doc["kind"], doc["name"])

    return OldRegistry(store, lock, None, time.time)


def _timed(fn: Any, least: float = 0.3) -> float:
    """Seconds per call: repeated for at least `least` seconds, the best of 3."""
    best = float("inf")
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            spent = time.perf_counter() - start
            if spent >= least / 3:
                break
        best = min(best, spent / calls)
    return best


def _scale_rows(tmp: Path, n: int) -> list[tuple[str, float, float]]:
    """(what, old seconds, new seconds) per question, on a registry of `n` datasets."""
    from nai_server.app.accounts import Caller
    from nai_server.app.registry import Registry
    from nai_server.app.tree_access import TreeAccess
    from nai_server.core import registry_rules as rules
    from nai_server.store.atomic import CommitLock
    from nai_server.store.db import TinyDbStore

    caller = Caller("mallory", uid=60_999, admin=False)
    unknown, held = "f" * 64, "e" * 64
    lock = CommitLock()
    store = TinyDbStore(tmp, lock)
    # Every other entry shared (a listing shows it), one holding tree `held`.
    store._registry("dataset").insert_multiple(
        {"kind": "dataset", "name": f"ds{i}", "owner": {"user": f"u{i % 50}"},
         "visibility": "shared" if i % 2 else "private", "shared_with_groups": [],
         "description": "", "created_at": 0.0, "created_by": f"u{i % 50}",
         "next_version": 6,
         "versions": [{"version": v, "tag": None,
                       "tree_id": held if i == n // 2 else "a" * 64, "size": 1, "files": 1,
                       "deleted": False, "used_by": [], "metadata": {"k": "x" * 500}}
                      for v in range(1, 6)]}
        for i in range(n))
    store.commit()
    access = TreeAccess(store, lock, None, lambda c, j: False)  # type: ignore[arg-type]
    registry = Registry(store, lock, None, time.time)  # type: ignore[arg-type]
    name = f"ds{n // 2}"
    assert _old_via_registry(store, caller, held) == access.via_registry(caller, held)
    assert _old_get(store, "dataset", name) == store.get_registry_entry("dataset", name)
    pairs = [
        ("tree check, unknown tree", lambda: _old_via_registry(store, caller, unknown),
         lambda: access.via_registry(caller, unknown)),
        ("tree check, held tree", lambda: _old_via_registry(store, caller, held),
         lambda: access.via_registry(caller, held)),
        ("lookup by name", lambda: _old_get(store, "dataset", name),
         lambda: store.get_registry_entry("dataset", name)),
        ("listing (GET /v1/datasets)",
         lambda: [registry._summary(caller, d) for d in store.list_registry_entries("dataset")
                  if rules.may_read(caller, d)],
         lambda: registry.list_entries(caller, "dataset")),
        # Old: the deep copies collect() made before it looked (a floor on its cost).
        ("collect, nothing due",
         lambda: [store.list_registry_entries(k) for k in ("dataset", "model")],
         registry.collect),
    ]
    rows = [(label, _timed(old), _timed(new)) for label, old, new in pairs]

    # Removal: a user's throwaway dataset made (written straight to the store, the
    # same for both) and removed, as a create/remove loop does; each remove also
    # collects. Then collect with one version kept marked (a queued job, 1, uses it):
    # what every job's end paid while it waited.
    old_registry = _old_registry(store, lock)
    for r in (registry, old_registry):
        r._active_jobs = lambda: {1}  # type: ignore[method-assign]
    mine = {"kind": "dataset", "name": "throwaway", "owner": {"user": caller.user},
            "visibility": "private", "shared_with_groups": [], "description": "",
            "created_at": 0.0, "created_by": caller.user, "next_version": 2,
            "versions": [{"version": 1, "tag": None, "tree_id": "b" * 64, "size": 1,
                          "files": 1, "deleted": False, "used_by": [], "metadata": {}}]}

    def make_and_remove(r: Any) -> Any:
        store.put_registry_entry("dataset", mine)
        return r.remove(caller, "dataset", "throwaway")

    old_plan = make_and_remove(old_registry)
    new_plan = make_and_remove(registry)
    assert (old_plan.removed, old_plan.entry_removed) == (tuple(new_plan.removed), True)
    rows.append(("remove (create + rm)", _timed(lambda: make_and_remove(old_registry)),
                 _timed(lambda: make_and_remove(registry))))
    held_doc = {**mine, "name": "held", "versions": [
        {**mine["versions"][0], "deleted": True, "used_by": [1]}]}  # type: ignore[index]
    store.put_registry_entry("dataset", held_doc)
    assert old_registry.collect() == registry.collect() == 0
    rows.append(("remove, one marked", _timed(lambda: make_and_remove(old_registry)),
                 _timed(lambda: make_and_remove(registry))))
    rows.append(("collect, one marked", _timed(old_registry.collect),
                 _timed(registry.collect)))
    store.close()
    return rows


def part_c(sizes: list[int]) -> None:
    """The tree check, a lookup, a removal and collects, new against old, per size."""
    worst = 0.0
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="nai-bench-regscale-") as tmp:
            rows = _scale_rows(Path(tmp), n)
        print(f"registry of {n} entries x 5 versions:")
        for label, before, after in rows:
            print(f"  {label:26s} old {before * 1000:9.3f} ms  new {after * 1000:9.3f} ms"
                  f"  new/old {after / before:.3g}")
            if label.startswith("tree check") and n == max(sizes):
                worst = max(worst, after / before)
    verdict = "ok" if worst <= SCALE_TARGET else "MISSED"
    print(f"part C: tree check at {max(sizes)} entries costs {worst:.3g} of the old way "
          f"(target <= {SCALE_TARGET}): {verdict}")


if __name__ == "__main__":
    main()
