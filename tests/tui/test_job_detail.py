"""One job: the log followed live and searched, metric plots, spec, outputs."""

from __future__ import annotations

from textual.widgets import TabbedContent
from tui_kit import NOW, SIZE, notifications, settle, text_of

from nai_tui.tui.screens.job_detail import JobDetailScreen
from nai_tui.tui.screens.jobs import JobsScreen
from nai_tui.tui.widgets.job_table import JobTable
from nai_tui.tui.widgets.log_view import LogView
from nai_tui.tui.widgets.metric_plot import MetricPanel, MetricPlot
from nai_tui.tui.widgets.output_tree import OutputTree


async def open_job(pilot, job_id: int) -> JobDetailScreen:
    await settle(pilot)
    pilot.app.screen.query_one(JobTable).select_job(job_id)
    await pilot.press("enter")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, JobDetailScreen) and screen.job_id == job_id
    return screen


async def test_enter_opens_the_job_and_escape_goes_back(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_job(pilot, 1)
        assert "cifar-resnet" in text_of(screen.query_one("#job-header"))
        await pilot.press("escape")
        assert isinstance(app.screen, JobsScreen)


async def test_log_follows_as_the_job_writes(make_app, fake) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_job(pilot, 1)
        log = screen.query_one(LogView)
        assert log.lines[0].startswith("epoch   1")
        assert log.line_count == 24
        fake.append_log(1, "epoch  25  loss 0.0920")
        screen.poll()
        await settle(pilot)
        fake.append_log(1, "  acc 0.964\nsaving checkpoint\n")  # a line in two pieces
        screen.poll()
        await settle(pilot)
        assert log.lines[-3:] == ["epoch  25  loss 0.0920  acc 0.964", "saving checkpoint", ""]
        assert log.is_vertical_scroll_end  # following the end
        assert fake.calls.count("logs") == 3
        await pilot.press("f")  # stop following to read back
        assert not log.following


async def test_log_search_highlights_and_jumps(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(100, 20)) as pilot:
        screen = await open_job(pilot, 1)
        log = screen.query_one(LogView)
        await pilot.press("slash", *"loss 0.23")
        assert log.matches() == [9]  # epoch 10
        assert log.match_line == 9 and not log.following
        await pilot.press("enter")  # the only match: stays there
        assert log.match_line == 9
        await pilot.press("escape")  # closes the search box, keeps the term
        await pilot.press("n")
        assert log.match_line == 9
        await pilot.press("slash")
        screen.query_one("#log-search").value = "acc 0.9"
        await pilot.pause()
        first = log.match_line
        await pilot.press("escape", "n")
        assert log.match_line is not None and log.match_line > first
        await pilot.press("N")
        assert log.match_line == first
        await pilot.press("slash", *"nowhere", "enter")
        assert any("not in the log" in n for n in notifications(app))


async def test_metric_plots_update_while_the_job_runs(make_app, fake) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_job(pilot, 1)
        await pilot.press("2")
        assert screen.query_one(TabbedContent).active == "metrics"
        panel = screen.query_one(MetricPanel)
        assert [p.metric for p in panel.query(MetricPlot)] == ["loss", "acc"]
        assert len(panel.rows) == 24
        fake.add_metrics(1, [{"step": 25, "loss": 0.09, "acc": 0.97, "lr": 0.001}])
        screen.poll()
        await settle(pilot)
        assert len(panel.rows) == 25
        assert [p.metric for p in panel.query(MetricPlot)] == ["loss", "acc", "lr"]
        await pilot.press("t")
        assert panel.x_axis == "time"


async def test_spec_and_timeline(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_job(pilot, 4)
        await pilot.press("3")
        text = text_of(screen.query_one("#job-spec"))
        assert "command: python train.py" in text and "gpus: 4" in text
        assert "est. start" in text and "needs 4 GPUs, 1 free" in text


async def test_job_end_lists_outputs_and_stops_polling(make_app, fake) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_job(pilot, 1)
        tree = screen.query_one(OutputTree)
        assert tree.info is None
        fake.append_log(1, "done\n")
        fake.update_job(1, state="succeeded", ended_at=NOW + 10, exit_code=0, gpus=[])
        fake.set_outputs(1, {"model.pt": b"weights", "eval/report.txt": b"ok"})
        screen.poll()
        await settle(pilot)
        assert screen.settled
        assert tree.info is not None and tree.info.files == 2
        assert screen.query_one(LogView).lines[-2] == "done"
        calls = len(fake.calls)
        screen.poll()
        await settle(pilot)
        assert len(fake.calls) == calls  # nothing more to fetch


async def test_download_everything_then_one_file(make_app, tmp_path) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_job(pilot, 6)
        await pilot.press("4")
        await pilot.press("p")
        await settle(pilot)
        dest = tmp_path / "out" / "6"
        assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == [
            "plots/loss.txt", "summary.json", "weights.npz"]
        for path in dest.rglob("*"):
            if path.is_file():
                path.unlink()
        tree = screen.query_one(OutputTree)
        tree.focus()
        node = next(n for n in tree.root.children if n.data == "summary.json")
        tree.move_cursor(node)
        await pilot.press("d")
        await settle(pilot)
        assert [p.name for p in dest.rglob("*") if p.is_file()] == ["summary.json"]
        assert (dest / "summary.json").read_bytes() == b'{"val_acc": 0.912}'


async def test_someone_elses_log_is_refused_once_not_every_poll(make_app, fake) -> None:
    from nai_server.protocol import Forbidden

    def refuse(job_id: int, offset: int = 0) -> bytes:
        raise Forbidden(f"job {job_id} belongs to bob; its log is theirs")

    fake.logs = refuse  # type: ignore[method-assign]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_job(pilot, 2)
        screen.poll()
        await settle(pilot)
        assert "its log is theirs" in screen.query_one(LogView).lines[0]
        assert not any("belongs to bob" in n for n in notifications(app))


async def test_a_late_page_is_not_applied_twice(make_app) -> None:
    from nai_tui.tui.messages import LogAppended, MetricsArrived

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_job(pilot, 1)
        # what a fetch that started before the last one was applied would bring
        screen.post_message(LogAppended(1, 0, b"epoch   1  loss 2.3000  acc 0.100\n"))
        screen.post_message(MetricsArrived(1, 0, [{"step": 1, "loss": 2.3}], 1))
        await pilot.pause()
        assert screen.query_one(LogView).line_count == 24
        assert len(screen.query_one(MetricPanel).rows) == 24
