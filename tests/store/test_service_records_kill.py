"""Service records are not journaled as jobs are: each write of one rewrites the hot
state file whole (atomically), even when the journal is in use for jobs. A process
killed with SIGKILL while it interleaves journaled job writes with service writes
loses none of the service writes it acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from nai_server.store.db import TinyDbStore
from nai_server.store.service_records import ServiceRecords

WRITER = r"""
import sys
from pathlib import Path
from nai_server.store.atomic import CommitLock
from nai_server.store.db import TinyDbStore
from nai_server.store.service_records import ServiceRecords

lock = CommitLock()
store = TinyDbStore(Path(sys.argv[1]), lock)
records = ServiceRecords(store)
with lock:
    records.put({"name": "gone", "rev": 0})
with lock:
    records.remove("gone")
print("removed", flush=True)
i = 0
while True:
    with lock:  # a job-only commit: a journal record
        store.insert_job({"state": "queued", "n": i})
    with lock:  # a service write, committed when the lock is let go
        records.put({"name": f"s{i % 3}", "rev": i, "replica_docs": [{"run": i}]})
    print("acked", i % 3, i, flush=True)
    i += 1
"""


def test_acknowledged_service_writes_survive_sigkill(tmp_path: Path) -> None:
    for kill_after in (1, 7, 40):
        state = tmp_path / f"state{kill_after}"
        state.mkdir()
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(state)],
                                 stdout=subprocess.PIPE, text=True, env=os.environ.copy())
        assert child.stdout is not None
        acked: dict[str, int] = {}
        assert child.stdout.readline().strip() == "removed"
        while len(acked) < 3 or max(acked.values()) < kill_after:
            line = child.stdout.readline().split()
            assert line and line[0] == "acked", line
            acked[f"s{line[1]}"] = int(line[2])
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()

        store = TinyDbStore(state)
        try:
            found = {d["name"]: d for d in ServiceRecords(store).list()}
            assert "gone" not in found  # an acknowledged removal stays removed
            for name, rev in acked.items():
                assert found[name]["rev"] >= rev, (name, found[name], rev)
                assert found[name]["replica_docs"] == [{"run": found[name]["rev"], "handle": None}]
            jobs = store.hot_jobs()
            assert len(jobs) >= max(acked.values()) + 1  # the journal's records too
        finally:
            store.db.storage._data = None  # no close: what a restart finds, as it is
