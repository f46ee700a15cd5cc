"""A job at a glance (`JobHeader`) and in full: its spec and its timeline
(`JobSpec`)."""

from __future__ import annotations

import time

import yaml
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from nai_server.protocol import JobInfo, format_elapsed
from nai_tui.tui.widgets import format as fmt


def clock_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


class JobHeader(Static):
    """`#12 cifar-resnet  alice  running 1h30m  GPUs 2 (gpu 0,1)` and why it waits or how it
    ended."""

    DEFAULT_CSS = """
    JobHeader {
        height: auto;
        padding: 0 1;
        background: $boost;
    }
    """

    error: str | None = None  # the failed job's log's last error line, once read

    def show(self, job: JobInfo, now: float) -> None:
        line = Text.assemble((f"#{job.id} ", "bold"), (job.name, "bold"), "  ", job.user,
                             (f" ({job.group})" if job.group else ""), "  ")
        line.append_text(fmt.state_text(job.state))
        if job.started_at is not None:
            line.append(f"  ran {fmt.runtime(job, now)}" if fmt.is_ended(job)
                        else f"  for {fmt.runtime(job, now)}")
        elif not fmt.is_ended(job):
            line.append(f"  waiting {fmt.age(job, now)}")
        gpus = fmt.gpus_text(job, long=True)
        line.append("  CPU only" if gpus == "cpu" else f"  GPUs {gpus}")
        if job.exit_code is not None:
            line.append(f"  exit {job.exit_code}", style="red" if job.exit_code else "green")
        note = fmt.note(job)
        if job.est_start is not None and not fmt.is_ended(job):
            note += f" (est. start in {format_elapsed(job.est_start - now)})"
        parts = [line, Text(note, style="italic dim")] if note else [line]
        if self.error and job.state != "succeeded":
            parts.append(Text(self.error, style="bold red"))
        self.update(Group(*parts) if len(parts) > 1 else line)


class JobSpec(Static):
    """The spec as it was submitted, and when each step happened."""

    DEFAULT_CSS = """
    JobSpec {
        height: auto;
        padding: 1 2;
    }
    """

    def show(self, job: JobInfo, now: float) -> None:
        timeline = Table.grid(padding=(0, 2))
        timeline.add_column(style="bold")
        timeline.add_column()
        timeline.add_column(style="dim")
        timeline.add_row("submitted", clock_time(job.submitted_at),
                         f"{fmt.age(job, now)} ago" if job.ended_at is None else "")
        if job.started_at is not None:
            timeline.add_row("started", clock_time(job.started_at),
                             f"waited {format_elapsed(job.started_at - job.submitted_at)}")
        elif job.est_start is not None:
            timeline.add_row("est. start", clock_time(job.est_start), job.reason or "")
        if job.ended_at is not None:
            timeline.add_row(job.state.replace("_", " "), clock_time(job.ended_at),
                             f"ran {fmt.runtime(job, now)}")
        spec = yaml.safe_dump(job.spec, sort_keys=False, allow_unicode=True).rstrip()
        parts: list[Text | Table] = [Text("Timeline", style="bold underline"), timeline,
                                     Text(""), Text("Spec", style="bold underline"),
                                     Text(spec)]
        if job.code_tree:
            parts.append(Text(f"code tree {job.code_tree[:16]}…", style="dim"))
        if job.message:
            parts += [Text(""), Text(job.message, style="italic")]
        self.update(Group(*parts))
