"""Compare runs: mark 2–6 jobs, press C: shared metric plots, specs side by side with
the differences highlighted, final metrics with the best of each marked."""

from __future__ import annotations

from textual.widgets import DataTable
from tui_kit import SIZE, notifications, settle

from nai_tui.tui.screens.compare import (
    CompareScreen,
    best_index,
    final_values,
    flat_spec,
    spec_rows,
)
from nai_tui.tui.widgets.job_table import JobTable
from nai_tui.tui.widgets.metric_plot import MetricPlot


async def mark(pilot, *job_ids: int) -> None:
    table = pilot.app.screen.query_one(JobTable)
    for job_id in job_ids:
        table.select_job(job_id)
        await pilot.press("space")
    await settle(pilot)


async def test_marked_jobs_open_side_by_side(make_app, fake) -> None:
    fake.add_metrics(6, [{"step": 1, "acc": 0.5}, {"step": 2, "acc": 0.8}])
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await mark(pilot, 1, 6)
        await pilot.press("C")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, CompareScreen) and screen.job_ids == [1, 6]
        plots = {plot.metric for plot in screen.query(MetricPlot)}
        assert plots == {"loss", "acc"}  # one shared plot per metric, not per job
        specs = screen.query_one("#compare-spec-table", DataTable)
        first = specs.get_row_at(0)
        assert first[0].style == "bold yellow"  # the differences come first, highlighted
        assert str(specs.get_row(str(first[0]))[0]) == str(first[0])
        final = screen.query_one("#compare-final-table", DataTable)
        loss = [str(c) for c in final.get_row("loss")]
        assert loss == ["loss", "0.0958", "0.0175"]  # job 1's last, job 6's last
        assert final.get_row("loss")[2].style == "bold green"  # lower loss is better
        acc = final.get_row("acc")
        assert acc[1].style == "bold green" and str(acc[1]) == "0.9625"  # higher acc
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, CompareScreen)


async def test_compare_needs_two_to_six_marked(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await mark(pilot, 1)
        await pilot.press("C")
        await settle(pilot)
        assert not isinstance(app.screen, CompareScreen)
        assert any("Mark 2 to 6 jobs" in n for n in notifications(app))


def test_spec_rows_put_the_differences_first() -> None:
    class Job:
        def __init__(self, spec: dict) -> None:
            self.spec = spec

    rows = spec_rows([Job({"command": "train", "gpus": 1, "env": {"LR": "0.1"}}),
                      Job({"command": "train", "gpus": 2, "env": {"LR": "0.1"}})])
    assert rows[0] == ("gpus", ["1", "2"], True)
    assert ("env.LR", ["0.1", "0.1"], False) in rows
    assert flat_spec({"a": {"b": [1]}}) == {"a.b": "[1]"}


def test_final_values_and_the_best() -> None:
    finals = final_values([[{"loss": 1.0}, {"loss": 0.5}], [{"acc": 0.7}]])
    assert finals == [("loss", [0.5, None]), ("acc", [None, 0.7])]
    assert best_index("val_loss", [0.4, 0.2]) == 1
    assert best_index("acc", [0.4, 0.2]) == 0
    assert best_index("acc", [0.4, None]) is None
