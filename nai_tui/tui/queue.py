"""What the jobs screen fetches, in its worker thread: the queue, complete, through the
server's cursor paging (`before=<id>`).

A poll reads the newest page, every running and waiting job however many (their state
changes; finished ones do not), and refreshes the few jobs it showed as active that
have left those states since. Older history is read page by page as the table is
scrolled down, or all of it while a filter is typed. Counts are the server's totals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nai_server.protocol import JobInfo, NotFound
from nai_tui.remote.client import ServerClient
from nai_tui.tui.widgets.format import ACTIVE_STATES, WAITING_STATES

PAGE = 300  # newest jobs read per poll
MORE = 1000  # jobs per page of older history (the server's most)
MAX_REFRESH = 50  # jobs that left the active states re-read one by one per poll

Query = tuple[str, str, str]  # (scope, state, user): what the server filters by


@dataclass
class QueuePoll:
    """One poll's answer."""

    query: Query
    jobs: list[JobInfo]
    total: int  # jobs matching the query on the server
    older: int | None  # the cursor below the newest page (None: nothing older)
    counts: dict[str, int] = field(default_factory=dict)  # active and waiting, by state


def poll_queue(client: ServerClient, query: Query, stale: list[int]) -> QueuePoll:
    """The newest page, every active and waiting job, and the jobs in `stale` (shown
    as active before) read again."""
    scope, state, user = query
    newest = client.jobs(scope=scope, state=state or None, user=user or None, limit=PAGE)
    jobs = {job.id: job for job in newest.jobs}
    counts: dict[str, int] = {}
    for active in (*ACTIVE_STATES, *WAITING_STATES):
        if state and state != active:
            continue
        if state == active:
            counts[active] = newest.total
        before: int | None = newest.next_before if state == active else None
        if state == active and before is None:
            continue
        while True:
            page = client.jobs(scope=scope, state=active, user=user or None, limit=MORE,
                               before=before)
            counts.setdefault(active, page.total)
            jobs.update((job.id, job) for job in page.jobs)
            before = page.next_before
            if before is None:
                break
    for job_id in [i for i in stale if i not in jobs][:MAX_REFRESH]:
        try:
            jobs[job_id] = client.job(job_id)
        except NotFound:
            continue
    return QueuePoll(query, list(jobs.values()), newest.total, newest.next_before, counts)


def older_page(client: ServerClient, query: Query, before: int) -> tuple[list[JobInfo],
                                                                          int | None]:
    """The page of history below `before`, and the cursor below it."""
    scope, state, user = query
    page = client.jobs(scope=scope, state=state or None, user=user or None, limit=MORE,
                       before=before)
    return page.jobs, page.next_before
