"""What every screen shares: worker failures go to the app's one handler, polling
that never overlaps and pauses while the screen is hidden or the server unreachable,
and the job actions (cancel, copy id, pull outputs) that two screens offer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from textual import work
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from nai_server.protocol import JobInfo
from nai_tui.tui.messages import (
    DownloadFinished,
    JobCancelled,
    TransferProgressed,
    WorkFailed,
)
from nai_tui.tui.pull_places import PullPlaces
from nai_tui.tui.widgets.format import is_ended, kept_note
from nai_tui.tui.widgets.transfer_bar import TransferBar

if TYPE_CHECKING:
    from nai_tui.tui.app import NaiApp


class ReportsFailures:
    """Forward failed workers of this node to the app (Worker.StateChanged does not
    bubble)."""

    app: Any

    @property
    def nai(self) -> NaiApp:
        return cast("NaiApp", self.app)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.ERROR and worker.error is not None:
            self.app.post_message(WorkFailed(worker.error, worker.name))


class NaiScreen(ReportsFailures, Screen[None]):
    """A full screen of the app."""


T = TypeVar("T")


class NaiModal(ReportsFailures, ModalScreen[T]):
    """A dialog over the current screen."""


class PollingScreen(NaiScreen):
    """Calls `fetch()` (a thread worker) every poll interval while shown and connected,
    never while the previous fetch still runs."""

    def __init__(self) -> None:
        super().__init__()
        self._timer: Timer | None = None
        self._fetching: Worker[Any] | None = None
        self._again = False
        self._shown = False  # whether the screen has been shown (ScreenResume) yet

    def on_mount(self) -> None:
        # The first fetch comes with ScreenResume, sent when the screen is shown.
        self._timer = self.set_interval(self.nai.poll_interval, self.poll)

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.pause()

    def on_screen_resume(self) -> None:
        if self._timer is not None:
            self._timer.resume()
        shown_before, self._shown = self._shown, True
        if shown_before or self._fetching is None:
            self.poll()  # the first showing after a fetch made before it: that one will do

    def poll(self, *, again: bool = False) -> None:
        """Fetch now, unless a fetch runs (with `again`, fetch once it ends: what it
        fetches is out of date), the server is away, or nothing is left to fetch."""
        if not (self.nai.connected and self.ready_to_fetch() and self.wants_poll()):
            return
        if self._fetching is not None and not self._fetching.is_finished:
            self._again = self._again or again
            return
        self._again = False
        self._fetching = self.fetch()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is self._fetching and event.worker.is_finished and self._again:
            self.poll()

    def wants_poll(self) -> bool:
        return True

    def ready_to_fetch(self) -> bool:
        """Whether `fetch` may run yet: by default once mounted (a screen not mounted
        yet polls when it is shown, with ScreenResume)."""
        return self.is_mounted

    def fetch(self) -> Worker[Any]:
        raise NotImplementedError


class JobActionsScreen(PollingScreen):
    """A polling screen about jobs: cancel (after a confirmation), copy the id, and
    download outputs with progress. It composes a `TransferBar`."""

    def current_job(self) -> JobInfo | None:
        raise NotImplementedError

    def _job_or_say(self) -> JobInfo | None:
        job = self.current_job()
        if job is None:
            self.app.notify("No job selected", severity="warning")
        return job

    def action_copy_id(self) -> None:
        """Copy the selected job's id to the clipboard."""
        job = self._job_or_say()
        if job is not None:
            self.app.copy_to_clipboard(str(job.id))
            self.app.notify(f"Copied job id {job.id}")

    def action_cancel_job(self) -> None:
        """Cancel the selected job once you confirm."""
        from nai_tui.tui.screens.confirm import ConfirmScreen

        job = self._job_or_say()
        if job is None:
            return
        if is_ended(job):
            self.app.notify(f"Job {job.id} already ended ({job.state})", severity="warning")
            return
        what = "stop it (SIGTERM, then SIGKILL after the grace period)" \
            if job.state in ("running", "starting") else "take it off the queue"

        def answered(yes: bool | None) -> None:
            if yes:
                self._cancel(job.id)

        self.app.push_screen(ConfirmScreen(f"Cancel job #{job.id} {job.name}?",
                                           f"This will {what}.", yes="Cancel job",
                                           no="Keep it"), answered)

    @work(thread=True, exit_on_error=False, group="cancel")
    def _cancel(self, job_id: int) -> None:
        self.post_message(JobCancelled(self.nai.api.cancel(job_id)))

    def on_job_cancelled(self, message: JobCancelled) -> None:
        job = message.job
        self.app.notify(f"Job {job.id} cancelled" if job.state == "cancelled"
                        else f"Job {job.id} is stopping (SIGTERM sent)")
        self.poll()

    def _pullable(self) -> JobInfo | None:
        """The selected job if its outputs can be pulled now; else None, said why."""
        job = self._job_or_say()
        if job is None:
            return None
        if not is_ended(job):
            self.app.notify(f"Job {job.id} is {job.state}: outputs can be pulled once it "
                            f"ends", severity="warning")
            return None
        if self.query_one(TransferBar).active:
            self.app.notify("A download is already running", severity="warning")
            return None
        return job

    @property
    def pull_places(self) -> PullPlaces:
        return PullPlaces(self.nai.config.path.parent / "pull-places.json")

    def action_pull(self, prefix: str = "") -> None:
        """Ask where to pull the job's outputs (everything, or the file or folder at
        `prefix`), offering the project's place; the answer becomes its place."""
        from nai_tui.tui.screens.prompt import PromptScreen

        job = self._pullable()
        if job is None:
            return
        places = self.pull_places
        what = f"{prefix} from job {job.id}" if prefix else f"job {job.id}'s outputs"

        def answered(folder: str | None) -> None:
            if folder and self._pullable() is not None:
                where = Path(folder).expanduser().absolute()
                places.remember(job.name, where)
                self._pull_into(job, prefix, where)

        self.app.push_screen(PromptScreen(
            f"Pull {what} under", value=str(places.folder(job.name, self.nai.downloads)),
            hint=f"each job in its own folder (…/{job.id}); remembered for {job.name!r} "
                 f"jobs (P pulls there without asking); escape to cancel"), answered)

    def action_pull_here(self) -> None:
        """Pull the job's outputs to its project's place without asking."""
        job = self._pullable()
        if job is not None:
            self._pull_into(job, "", self.pull_places.folder(job.name, self.nai.downloads))

    def _pull_into(self, job: JobInfo, prefix: str, folder: Path) -> None:
        self.query_one(TransferBar).begin(f"job {job.id}: listing outputs")
        self._download(job.id, prefix, folder / str(job.id))

    @work(thread=True, exit_on_error=False, group="download")
    def _download(self, job_id: int, prefix: str, dest: Path) -> None:
        client = self.nai.api
        tree = client.outputs(job_id)
        result = self.nai.transfers.pull(
            client, tree, dest, prefix,
            lambda what, done, total: self.post_message(
                TransferProgressed(done, total, f"job {job_id}: {what}")))
        self.post_message(DownloadFinished(job_id, dest, result.downloaded, result.skipped,
                                           result.kept))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "download" and event.state in (WorkerState.ERROR,
                                                                 WorkerState.CANCELLED):
            self.query_one(TransferBar).finish()

    def on_transfer_progressed(self, message: TransferProgressed) -> None:
        self.query_one(TransferBar).progress(message.label, message.done, message.total)

    def on_download_finished(self, message: DownloadFinished) -> None:
        self.query_one(TransferBar).finish(f"job {message.job_id}'s outputs: {message.dest}")
        skipped = f", {message.skipped} already there" if message.skipped else ""
        self.app.notify(f"Job {message.job_id}: {message.files} file(s) downloaded"
                        f"{skipped} into {message.dest}" + kept_note(message.kept),
                        title="Outputs pulled", severity="warning" if message.kept else
                        "information")
