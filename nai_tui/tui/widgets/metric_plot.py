"""Plots of a job's metrics (textual-plotext): one plot per metric, over step or
over time, redrawn as new lines of metrics.jsonl arrive."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Grid, VerticalScroll
from textual.widgets import Static
from textual_plotext import PlotextPlot

AXES = ("step", "time", "epoch")  # keys that are axes, not metrics


class MetricPlot(PlotextPlot):
    """One metric's line over the chosen x axis."""

    DEFAULT_CSS = """
    MetricPlot {
        height: 14;
        min-height: 8;
    }
    """

    def __init__(self, metric: str) -> None:
        super().__init__(classes="metric-plot")
        self.metric = metric

    def draw(self, xs: list[float], ys: list[float], x_label: str) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(f"{self.metric}  (last {ys[-1]:.4g})" if ys else self.metric)
        plt.xlabel(x_label)
        if xs:
            plt.plot(xs, ys, marker="braille")
        self.refresh()

    def draw_many(self, series: list[tuple[str, list[float], list[float]]],
                  x_label: str) -> None:
        """Several runs' lines of this metric on one plot, each labelled (compare)."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.metric)
        plt.xlabel(x_label)
        for label, xs, ys in series:
            if xs:
                plt.plot(xs, ys, marker="braille", label=label)
        self.refresh()


class MetricPanel(VerticalScroll):
    """All metrics of one job. `add_rows` appends lines; `x_axis` picks step or time."""

    DEFAULT_CSS = """
    MetricPanel > Grid {
        grid-size: 2;
        grid-rows: 14;
        grid-gutter: 0 1;
        height: auto;
    }
    MetricPanel > #metrics-empty {
        color: $text-muted;
        padding: 1 2;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[dict[str, Any]] = []
        self.x_axis = "step"
        self._plots: dict[str, MetricPlot] = {}

    def compose(self) -> ComposeResult:
        yield Static("no metrics yet: a job writes JSON lines such as "
                     '{"step": 10, "loss": 0.3} to $NAI_METRICS_FILE', id="metrics-empty")
        yield Grid()

    @property
    def metrics(self) -> list[str]:
        """Numeric keys seen so far, in order of appearance."""
        names: list[str] = []
        for row in self.rows:
            names += [k for k, v in row.items() if k not in AXES and k not in names
                      and isinstance(v, int | float) and not isinstance(v, bool)]
        return names

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self.rows.extend(rows)
        self.redraw()

    def toggle_axis(self) -> str:
        """Switch the x axis between step and elapsed time; returns the new one."""
        self.x_axis = "time" if self.x_axis == "step" else "step"
        self.redraw()
        return self.x_axis

    def _x(self, i: int, row: dict[str, Any], t0: float) -> float:
        if self.x_axis == "time" and isinstance(row.get("time"), int | float):
            return float(row["time"]) - t0
        step = row.get("step", row.get("epoch"))
        return float(step) if isinstance(step, int | float) else float(i)

    def redraw(self) -> None:
        grid = self.query_one(Grid)
        names = self.metrics
        self.query_one("#metrics-empty").display = not names
        for name in names:
            if name not in self._plots:
                self._plots[name] = MetricPlot(name)
                grid.mount(self._plots[name])
        t0 = next((float(r["time"]) for r in self.rows
                   if isinstance(r.get("time"), int | float)), 0.0)
        label = "seconds" if self.x_axis == "time" else "step"
        for name, plot in self._plots.items():
            points = [(self._x(i, r, t0), float(r[name])) for i, r in enumerate(self.rows)
                      if isinstance(r.get(name), int | float)]
            plot.draw([x for x, _ in points], [y for _, y in points], label)
