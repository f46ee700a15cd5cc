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

from nai_server.app.accounts import Caller
from nai_server.app.jobs import Jobs
from nai_server.core.processing import ANNOTATOR_VAR
from nai_server.core.states import JobState
from nai_server.host import job_app
from nai_server.host.replica_http import Answer, ReplicaFailed, exchange
from nai_server.plugins.contracts import USER_HEADER
from nai_server.protocol import NotFound, Unavailable
from nai_server.protocol.services import BadGateway

TIMEOUT = 30.0  # seconds for the app's answer to start, and between pieces of it


class JobApps:
    """The relay to annotate jobs' apps."""

    def __init__(self, jobs: Jobs, timeout: float = TIMEOUT) -> None:
        self.jobs = jobs
        self.timeout = timeout

    async def relay(self, caller: Caller, job_id: int, method: str, target: str,
                    headers: list[tuple[bytes, bytes]], body: bytes) -> Answer:
        """Send one request to job `job_id`'s app; its answer, streamed."""
        job = await asyncio.to_thread(self.jobs.readable, caller, job_id)  # 403 if not
        if ANNOTATOR_VAR not in job.spec.env:
            raise NotFound(f"job {job_id} serves no app (`nai dataset annotate` starts one)")
        if job.state != JobState.RUNNING:
            raise Unavailable(f"job {job_id} is {job.state}; its app is there while it "
                              f"runs (see `nai show {job_id}`)")
        runtime = self.jobs.runtime
        try:
            uid = job_app.owner_uid(job.user, self.jobs.config.personal)
            sock = job_app.connect(runtime.job_dir(job_id), uid)
        except job_app.AppUnreachable as exc:
            raise Unavailable(f"job {job_id}'s app cannot be reached: {exc}; if it just "
                              f"started, try again in a moment") from exc
        user = USER_HEADER.encode()
        headers = [(k, v) for k, v in headers if k.lower() != user]
        headers.append((user, caller.user.encode()))
        try:
            return await exchange(sock, method, target, headers, body, self.timeout)
        except ReplicaFailed as exc:
            raise BadGateway(f"job {job_id}'s app: {exc}") from exc
