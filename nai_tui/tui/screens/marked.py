"""What the jobs screen does with the jobs marked with Space: cancel them all after
one confirmation, or compare 2 to 6 of them."""

from __future__ import annotations

from textual import work

from nai_server.protocol import NaiError
from nai_tui.tui.screens.base import JobActionsScreen
from nai_tui.tui.widgets.format import is_ended
from nai_tui.tui.widgets.job_table import JobTable


class MarkedJobsScreen(JobActionsScreen):
    """A job screen with a `JobTable` whose marked jobs can be acted on together."""

    def action_cancel_job(self) -> None:
        """Cancel the marked jobs (one confirmation for all), else the selected one."""
        from nai_tui.tui.screens.confirm import ConfirmScreen

        table = self.query_one(JobTable)
        marked = [job for job in table.marked_jobs() if not is_ended(job)]
        if not table.marked:
            super().action_cancel_job()
            return
        if not marked:
            self.app.notify("The marked jobs have all ended", severity="warning")
            return
        names = ", ".join(f"#{job.id}" for job in marked[:8]) + (
            f" and {len(marked) - 8} more" if len(marked) > 8 else "")

        def answered(yes: bool | None) -> None:
            if yes:
                self._cancel_many([job.id for job in marked])

        self.app.push_screen(ConfirmScreen(
            f"Cancel {len(marked)} marked job(s)?",
            f"{names}: running ones are stopped (SIGTERM, then SIGKILL), queued ones "
            f"taken off the queue.", yes=f"Cancel {len(marked)} job(s)", no="Keep them"),
            answered)

    @work(thread=True, exit_on_error=False, group="cancel")
    def _cancel_many(self, job_ids: list[int]) -> None:
        failed: list[str] = []
        for job_id in job_ids:
            try:
                self.nai.api.cancel(job_id)
            except NaiError as exc:
                failed.append(f"#{job_id}: {exc}")
        self.app.call_from_thread(self._cancelled_many, job_ids, failed)

    def _cancelled_many(self, job_ids: list[int], failed: list[str]) -> None:
        table = self.query_one(JobTable)
        table.marked.difference_update(job_ids)
        table.refresh()
        done = len(job_ids) - len(failed)
        self.app.notify(f"{done} job(s) cancelled" + (
            "; not cancelled: " + "; ".join(failed[:5]) if failed else ""),
            severity="warning" if failed else "information")
        self.poll()

    def action_compare(self) -> None:
        """Compare the marked jobs (2 to 6): their metrics, specs and final metrics."""
        from nai_tui.tui.screens.compare import MAX_JOBS, MIN_JOBS, CompareScreen

        marked = self.query_one(JobTable).marked_jobs()
        if not MIN_JOBS <= len(marked) <= MAX_JOBS:
            self.app.notify(f"Mark {MIN_JOBS} to {MAX_JOBS} jobs with space to compare "
                            f"them ({len(marked)} marked)", severity="warning")
            return
        self.app.push_screen(CompareScreen([job.id for job in marked]))
