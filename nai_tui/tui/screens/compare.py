"""`CompareScreen`: 2–6 marked jobs side by side, as experiment trackers show runs:
each metric of theirs on one shared plot, their specs in columns with the rows that
differ highlighted, and their final metrics in a table (the best of each marked)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Header, Static, TabbedContent, TabPane

from nai_server.protocol import JobInfo
from nai_tui.tui.screens.base import NaiScreen
from nai_tui.tui.widgets.footer import Footer
from nai_tui.tui.widgets.metric_plot import AXES, MetricPlot
from nai_tui.tui.widgets.sized_table import fill

MIN_JOBS, MAX_JOBS = 2, 6
MAX_PAGES = 50  # metric pages read per job, at most
Rows = list[dict[str, Any]]


def flat_spec(spec: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A spec as `key: text` lines, nested keys dotted (`env.SEED`)."""
    out: dict[str, str] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_spec(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def spec_rows(jobs: Sequence[JobInfo]) -> list[tuple[str, list[str], bool]]:
    """Each spec key with every job's value ("" where it has none) and whether they
    differ; differing keys first, then the rest, each in name order."""
    flats = [flat_spec(job.spec) for job in jobs]
    keys = sorted({key for flat in flats for key in flat})
    rows = [(key, [flat.get(key, "") for flat in flats]) for key in keys]
    marked = [(key, values, len(set(values)) > 1) for key, values in rows]
    return sorted(marked, key=lambda row: (not row[2], row[0]))


def metric_names(runs: Sequence[Rows]) -> list[str]:
    """Numeric metrics any of the runs logged, in order of first appearance."""
    names: list[str] = []
    for rows in runs:
        for row in rows:
            names += [k for k, v in row.items() if k not in AXES and k not in names
                      and isinstance(v, int | float) and not isinstance(v, bool)]
    return names


def final_values(runs: Sequence[Rows]) -> list[tuple[str, list[float | None]]]:
    """Each metric's last value in each run (None where the run never logged it)."""
    out = []
    for name in metric_names(runs):
        finals: list[float | None] = []
        for rows in runs:
            last = next((r[name] for r in reversed(rows)
                         if isinstance(r.get(name), int | float)), None)
            finals.append(None if last is None else float(last))
        out.append((name, finals))
    return out


def best_index(name: str, values: Sequence[float | None]) -> int | None:
    """Which run did best on a metric: the lowest loss/error, else the highest."""
    present = [(v, i) for i, v in enumerate(values) if v is not None]
    if len(present) < 2:
        return None
    lower = any(word in name.lower() for word in ("loss", "err", "perplexity", "time"))
    return (min(present) if lower else max(present))[1]


def series(rows: Rows, name: str) -> tuple[list[float], list[float]]:
    points = []
    for i, row in enumerate(rows):
        value = row.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            step = row.get("step", row.get("epoch", i))
            points.append((float(step) if isinstance(step, int | float) else float(i),
                           float(value)))
    return [x for x, _ in points], [y for _, y in points]


class CompareScreen(NaiScreen):
    """Escape goes back; 1–3 switch between metrics, specs and final metrics."""

    TITLE = "Compare"
    DEFAULT_CSS = """
    #compare-plots {
        grid-size: 2;
        grid-rows: 16;
        grid-gutter: 0 1;
        height: auto;
    }
    #compare-empty {
        color: $text-muted;
        padding: 1 2;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", tooltip="Back to the jobs"),
        Binding("1", "tab('compare-metrics')", "Metrics", tooltip="Every metric, all runs"),
        Binding("2", "tab('compare-specs')", "Specs", tooltip="Specs side by side"),
        Binding("3", "tab('compare-final')", "Final", tooltip="Final metrics"),
    ]

    class Loaded(Message):
        def __init__(self, jobs: list[JobInfo], runs: list[Rows]) -> None:
            super().__init__()
            self.jobs, self.runs = jobs, runs

    def __init__(self, job_ids: Sequence[int]) -> None:
        super().__init__()
        self.job_ids = list(job_ids)
        self.jobs: list[JobInfo] = []
        self.runs: list[Rows] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="compare-metrics", id="compare-tabs"):
            with TabPane("Metrics", id="compare-metrics"), VerticalScroll():
                yield Static("reading the metrics…", id="compare-empty")
                yield Grid(id="compare-plots")
            with TabPane("Specs", id="compare-specs"):
                yield DataTable(id="compare-spec-table", cursor_type="row")
            with TabPane("Final", id="compare-final"):
                yield DataTable(id="compare-final-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = " vs ".join(f"#{i}" for i in self.job_ids)
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="compare")
    def _load(self) -> None:
        client = self.nai.api
        jobs, runs = [], []
        for job_id in self.job_ids:
            jobs.append(client.job(job_id))
            rows: Rows = []
            since = 0
            for _ in range(MAX_PAGES):
                page = client.metrics(job_id, since)
                rows += page.metrics
                if not page.metrics or page.next == since:
                    break
                since = page.next
            runs.append(rows)
        self.post_message(self.Loaded(jobs, runs))

    def label(self, i: int) -> str:
        return f"#{self.jobs[i].id} {self.jobs[i].name}"

    def on_compare_screen_loaded(self, message: Loaded) -> None:
        self.jobs, self.runs = message.jobs, message.runs
        labels = [self.label(i) for i in range(len(self.jobs))]
        names = metric_names(self.runs)
        self.query_one("#compare-empty", Static).update(
            "" if names else "none of these jobs logged metrics ($NAI_METRICS_FILE)")
        self.query_one("#compare-empty").display = not names
        grid = self.query_one("#compare-plots", Grid)
        grid.remove_children()
        plots = [MetricPlot(name) for name in names]
        grid.mount_all(plots)
        for plot in plots:
            plot.draw_many([(label, *series(rows, plot.metric))
                            for label, rows in zip(labels, self.runs, strict=True)], "step")
        specs = self.query_one("#compare-spec-table", DataTable)
        fill(specs, ["SPEC", *labels], [
            [Text(key, style="bold yellow" if differs else "dim"),
             *(Text(v, style="bold yellow" if differs else "") for v in values)]
            for key, values, differs in spec_rows(self.jobs)],
             [key for key, _, _ in spec_rows(self.jobs)])
        finals = self.query_one("#compare-final-table", DataTable)
        rows: list[list[str | Text]] = []
        for name, values in final_values(self.runs):
            best = best_index(name, values)
            rows.append([name, *(Text("-" if v is None else f"{v:.4g}",
                                      style="bold green" if i == best else "")
                                 for i, v in enumerate(values))])
        fill(finals, ["METRIC", *labels], rows, [str(r[0]) for r in rows])

    def action_tab(self, tab: str) -> None:
        self.query_one("#compare-tabs", TabbedContent).active = tab

    def action_back(self) -> None:
        self.app.pop_screen()
