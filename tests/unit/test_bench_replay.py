"""bench/replay.py --explain: where a replay's idle GPU-hours went, and the figures
printed under a trace for each target the default policy missed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from nai_server.cli.simulate import Done, Replay, TraceJob

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_replay", ROOT / "bench" / "replay.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_replay"] = bench
_spec.loader.exec_module(bench)

H = 3_600.0


def _done(n: int, user: str, gpus: int, submit: float, start: float, end: float) -> Done:
    job = TraceJob(n, f"j{n}", user, submit * H, (end - start) * H, gpus, None)
    return Done(job, end * H, 0, started=start * H)


def test_idle_hours_split_by_what_waited() -> None:
    """Two GPUs. From 0 to 1 h one is idle while only a two-GPU job waits (blocked);
    from 1 to 10 h it is idle while a one-GPU job that would fit waits (held); from
    11 to 12 h one is idle with nothing queued (empty)."""
    done = [
        _done(1, "a", 1, 0, 0, 10),
        _done(2, "b", 2, 0, 10, 11),
        _done(3, "c", 1, 1, 11, 12),
    ]
    split = bench.idle_hours(done, 2)
    assert split == {"held": 9.0, "blocked": 1.0, "empty": 1.0}


def test_idle_hours_counts_nothing_on_a_full_machine() -> None:
    done = [_done(1, "a", 2, 0, 0, 5), _done(2, "b", 2, 0, 5, 6)]
    assert bench.idle_hours(done, 2) == {"held": 0.0, "blocked": 0.0, "empty": 0.0}


def test_why_missed_names_each_target_missed_and_only_those() -> None:
    """A default policy that kept a GPU idle for a reservation and made user b wait: its
    utilisation and worst-user lines carry the measured figures; the targets met get
    no line."""
    fair = (_done(1, "a", 1, 0, 0, 10), _done(2, "b", 1, 0, 10, 11))
    first = (_done(1, "a", 1, 0, 0, 10), _done(2, "b", 1, 0, 0, 1))
    results = {
        "fairshare": Replay("fairshare", 2, fair, 1, 0.0),
        "firstfit": Replay("firstfit", 2, first, 1, 0.0),
        "fifo": Replay("fifo", 2, fair, 1, 0.0),
        "backfill": Replay("backfill", 2, fair, 1, 0.0),
    }
    figures = {name: bench.metrics(r) for name, r in results.items()}
    met = {"jct": True, "bsld": False, "wide": True, "util": False}
    lines = bench.why_missed(results, figures, met)
    assert len(lines) == 2
    bsld, util = lines
    assert bsld.startswith("  worst-user slowdown: b (1 jobs; GPUs x jobs 1x1) 11.0,")
    assert "waiting 10.0 h on average; under firstfit 1.0 and 0.0 h" in bsld
    assert util.startswith("  utilisation: makespan 11 h against firstfit's 10 h")
    # fairshare: GPU 2 idle 0-10 h while b (fits) waits, then GPU 1 idle 10-11 h with
    # nothing queued; firstfit: GPU 2 idle 1-10 h with nothing queued.
    assert "(kept for a reservation or drain) 10 against 0" in util
    assert "with nothing queued 1 against 9" in util
