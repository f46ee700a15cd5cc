"""The client's log-range and log-search calls against the real app in process: what
the TUI's log view asks of a server, answered by the routes themselves."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from nai_server.app.use_cases import UseCases
from nai_server.protocol import Invalid
from nai_tui.remote.client import ServerClient

LOG = b"".join(b"line %d\n" % i for i in range(1, 20001)) + b"tail without newline"


def test_the_client_reads_ranges_and_searches_the_log(api: TestClient,
                                                      service: UseCases) -> None:
    client = ServerClient(api)
    job = client.submit(spec={"command": "true", "gpus": 0, "name": "paged"})
    job_dir = service.jobs.runtime.job_dir(job.id)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "log").write_bytes(LOG)

    assert client.log_range(job.id, 0, 0) == (b"", len(LOG))
    assert client.log_range(job.id, 7, 7) == (b"line 2\n", len(LOG))
    assert client.log_range(job.id, len(LOG) - 20, 100)[0] == b"tail without newline"
    found = client.log_search(job.id, "LINE 1999", 0)
    assert found.offsets[:2] == [LOG.index(b"line 1999"), LOG.index(b"line 19990")]
    assert found.next is None and found.size == len(LOG)
    back = client.log_search(job.id, "line 1999", len(LOG), backward=True, limit=1)
    assert back.offsets == [LOG.rindex(b"line 1999")] and back.next is not None
    with pytest.raises(Invalid):
        client.log_search(job.id, "x" * 257)
