"""Reaching the web app a running annotate job serves (`nai dataset annotate`): the
daemon relays `/v1/jobs/{id}/app/{path}` to the job's own unix socket, for those who
may read the job (its owner, its group's members for a group job, admins).

The job's socket is in a folder its user owns: `host.job_app` connects to it only if
it is the user's own socket with one of the user's processes behind it, never by
following a link, and never waits on it without a deadline. The caller's identity goes
to the app in `contracts.USER_HEADER` (any such header the caller sent is dropped).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from nai_server.app.accounts import Caller
from nai_server.app.jobs import Jobs
from nai_server.core.processing import ANNOTATE
from nai_server.core.states import JobState
from nai_server.host import job_app
from nai_server.host.replica_http import Answer, ReplicaFailed, exchange
from nai_server.plugins.contracts import USER_HEADER
from nai_server.protocol import NotFound, Unavailable
from nai_server.protocol.services import BadGateway

Headers = list[tuple[bytes, bytes]]
Forward = Callable[[str, str, Headers, bytes], Awaitable[Answer]]
TIMEOUT = 30.0  # seconds for the app's answer to start, and between pieces of it


class JobApps:
    """The relay to annotate jobs' apps."""

    def __init__(self, jobs: Jobs, timeout: float = TIMEOUT) -> None:
        self.jobs = jobs
        self.timeout = timeout

    async def admit(self, caller: Caller, job_id: int) -> Forward:
        """May `caller` reach job `job_id`'s app now (raises if not); how to send it a
        request. The job is read, and its user looked up, in a worker thread."""
        uid, where = await asyncio.to_thread(self._reachable, caller, job_id)
        user = USER_HEADER.encode()

        async def forward(method: str, target: str, headers: Headers, body: bytes) -> Answer:
            try:
                sock = job_app.connect(where, uid)  # the job's own folder: no waiting
            except job_app.AppUnreachable as exc:
                raise Unavailable(f"job {job_id}'s app cannot be reached: {exc}; if it "
                                  f"just started, try again in a moment") from exc
            sent = [(k, v) for k, v in headers if k.lower() != user]
            sent.append((user, caller.user.encode()))
            try:
                return await exchange(sock, method, target, sent, body, self.timeout)
            except ReplicaFailed as exc:
                raise BadGateway(f"job {job_id}'s app: {exc}") from exc
        return forward

    def _reachable(self, caller: Caller, job_id: int) -> tuple[int, Path]:
        job = self.jobs.readable(caller, job_id)  # 403 if not
        if job.made_by != ANNOTATE:  # the annotate request's job, not a look-alike spec
            raise NotFound(f"job {job_id} serves no app (`nai dataset annotate` starts one)")
        if job.state != JobState.RUNNING:
            raise Unavailable(f"job {job_id} is {job.state}; its app is there while it "
                              f"runs (see `nai show {job_id}`)")
        try:
            uid = job_app.owner_uid(job.user, self.jobs.config.personal)
        except job_app.AppUnreachable as exc:
            raise Unavailable(f"job {job_id}'s app cannot be reached: {exc}") from exc
        return uid, self.jobs.runtime.job_dir(job_id)
