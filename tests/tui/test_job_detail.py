"""One job: the log followed live and searched, metric plots, spec, outputs."""

from __future__ import annotations

from textual.widgets import TabbedContent
from tui_kit import NOW, SIZE, notifications, settle, text_of

from nai_tui.tui.screens.job_detail import JobDetailScreen
from nai_tui.tui.screens.jobs import JobsScreen
from nai_tui.tui.widgets.footer import Footer
from nai_tui.tui.widgets.job_table import JobTable
from nai_tui.tui.widgets.log_view import LogView
from nai_tui.tui.widgets.metric_plot import MetricPanel, MetricPlot
from nai_tui.tui.widgets.output_tree import OutputTree


def footer_actions(screen) -> set[str]:
    return {action for _, action, *_ in Footer.shown(screen)}


def on_screen(log: LogView) -> list[str]:
    """The log view's rows as shown, the status line last."""
    return [line.strip() for line in text_of(log).splitlines()]


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
        assert len(log.lines) == 24
        fake.append_log(1, "epoch  25  loss 0.0920")
        screen.poll()
        await settle(pilot)
        fake.append_log(1, "  acc 0.964\nsaving checkpoint\n")  # a line in two pieces
        screen.poll()
        await settle(pilot)
        assert log.lines[-2:] == ["epoch  25  loss 0.0920  acc 0.964", "saving checkpoint"]
        shown = on_screen(log)
        assert shown[len(log.lines) - 1] == "saving checkpoint"  # the end is in view
        assert "FOLLOWING" in shown[-1]  # the marker on the status line
        await pilot.press("f")  # stop following to read back
        assert not log.following and "FOLLOWING" not in on_screen(log)[-1]


async def test_progress_bars_redrawn_with_cr_take_one_line(make_app, fake) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_job(pilot, 1)
        fake.append_log(1, "\x1b[32mfit\x1b[0m\r 10%|#    |\r 50%|###  |\r100%|#####|\nnext\n")
        screen.poll()
        await settle(pilot)
        log = screen.query_one(LogView)
        assert log.lines[-2:] == ["100%|#####|", "next"]


def long_log(fake, lines: int = 200_000) -> int:
    job = fake.add_job("long", state="running", started_at=NOW - 60, gpus=[3])
    fake.append_log(job.id, "".join(f"line {i}\n" for i in range(1, lines + 1)))
    return job.id


async def test_a_long_log_opens_at_its_end_and_jumps_to_its_start(make_app, fake) -> None:
    job = long_log(fake)
    app = make_app()
    async with app.run_test(size=(100, 20)) as pilot:
        screen = await open_job(pilot, job)
        log = screen.query_one(LogView)
        shown = on_screen(log)
        assert shown[-2] == "line 200000" and "FOLLOWING" in shown[-1]
        assert log.end - log.start <= 2 << 20  # a window, not the whole log
        await pilot.press("g")
        await settle(pilot)
        shown = on_screen(log)
        assert shown[0] == "line 1" and "top of the log" in shown[-1]
        await pilot.press("ctrl+d", "j", "j")
        await settle(pilot)
        assert on_screen(log)[0] == f"line {1 + log.rows // 2 + 2}"
        await pilot.press("G")
        await settle(pilot)
        assert on_screen(log)[-2] == "line 200000"


async def test_scrolling_back_reads_earlier_parts_of_the_log(make_app, fake,
                                                              monkeypatch) -> None:
    from nai_tui.tui.widgets import log_view

    monkeypatch.setattr(log_view, "CHUNK", 4096)  # ~340 lines a read
    monkeypatch.setattr(log_view, "MAX_WINDOW", 16384)
    monkeypatch.setattr(log_view, "MARGIN", 20)
    job = long_log(fake)
    app = make_app()
    async with app.run_test(size=(100, 20)) as pilot:
        screen = await open_job(pilot, job)
        log = screen.query_one(LogView)
        first, rows = log.start, log.rows
        for _ in range(100):
            await pilot.press("pageup")
            await settle(pilot)
        assert log.start < first - 12 * 1000 and not log.following
        assert log.end - log.start <= 16384  # the far side was let go
        assert on_screen(log)[0] == f"line {200_000 - rows + 1 - 100 * rows}"
        await pilot.press("k")
        assert on_screen(log)[0] == f"line {200_000 - rows - 100 * rows}"
        for _ in range(100):
            await pilot.press("pagedown")
            await settle(pilot)
        assert on_screen(log)[-2] == "line 199999"  # one line short: the `k` above
        await pilot.press("j", "j")
        assert on_screen(log)[-2] == "line 200000"  # and no further


async def test_search_runs_across_the_whole_log_on_the_server(make_app, fake) -> None:
    job = long_log(fake)
    app = make_app()
    async with app.run_test(size=(100, 20)) as pilot:
        screen = await open_job(pilot, job)
        log = screen.query_one(LogView)
        await pilot.press("g")
        await settle(pilot)
        await pilot.press("slash", *"LINE 150000", "enter")
        await settle(pilot)
        assert "log_search" in fake.calls
        assert "line 150000" in on_screen(log)
        assert log.match_offset is not None and not log.following
        first = log.match_offset
        await pilot.press("n")  # the only match: around the log and back to it
        await settle(pilot)
        assert log.match_offset == first
        await pilot.press("slash", *"line 9999", "enter")  # line 9999, then 99990...
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert "line 99990" in on_screen(log)
        await pilot.press("N")
        await settle(pilot)
        assert "line 9999" in on_screen(log)
        await pilot.press("slash", *"nowhere", "enter")
        await settle(pilot)
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
        assert footer_actions(screen) >= {"cancel_job"} and "pull" not in footer_actions(screen)
        fake.append_log(1, "done\n")
        fake.update_job(1, state="succeeded", ended_at=NOW + 10, exit_code=0, gpus=[])
        fake.set_outputs(1, {"model.pt": b"weights", "eval/report.txt": b"ok"})
        screen.poll()
        await settle(pilot)
        assert screen.settled
        assert tree.info is not None and tree.info.files == 2
        assert screen.query_one(LogView).lines[-1] == "done"
        await pilot.pause()
        assert "pull" in footer_actions(screen) and "cancel_job" not in footer_actions(screen)
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
        await pilot.press("enter")  # where: the default place
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
        await pilot.press("enter")
        await settle(pilot)
        assert [p.name for p in dest.rglob("*") if p.is_file()] == ["summary.json"]
        assert (dest / "summary.json").read_bytes() == b'{"val_acc": 0.912}'


async def test_someone_elses_log_is_refused_once_not_every_poll(make_app, fake) -> None:
    from nai_server.protocol import Forbidden

    def refuse(job_id: int, offset: int = 0, length: int = 0) -> tuple[bytes, int]:
        raise Forbidden(f"job {job_id} belongs to bob; its log is theirs")

    fake.log_range = refuse  # type: ignore[method-assign]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_job(pilot, 2)
        screen.poll()
        await settle(pilot)
        assert "its log is theirs" in on_screen(screen.query_one(LogView))[0]
        assert fake.calls.count("job") == 2  # polled again, but the log not asked again
        assert not any("belongs to bob" in n for n in notifications(app))


async def test_a_late_page_is_not_applied_twice(make_app) -> None:
    from nai_tui.tui.messages import MetricsArrived

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_job(pilot, 1)
        # what a fetch that started before the last one was applied would bring
        screen.post_message(MetricsArrived(1, 0, [{"step": 1, "loss": 2.3}], 1))
        await pilot.pause()
        assert len(screen.query_one(MetricPanel).rows) == 24


TRACEBACK = """epoch 1
Traceback (most recent call last):
  File "train.py", line 3, in <module>
    import torch
ModuleNotFoundError: No module named 'torch'
"""


def test_the_last_error_line_of_a_log() -> None:
    from nai_tui.tui.widgets.format import last_error_line

    assert last_error_line(TRACEBACK.splitlines()) == \
        "ModuleNotFoundError: No module named 'torch'"
    assert last_error_line(["loading", "RuntimeError: CUDA out of memory.", "", "  "]) == \
        "RuntimeError: CUDA out of memory."
    assert last_error_line(["step 1", "step 2", "bash: ./run.sh: Permission denied"]) == \
        "bash: ./run.sh: Permission denied"
    assert last_error_line(["step 1", "step 2"]) == "step 2"  # nothing reads like one
    assert last_error_line(["", " "]) is None


async def test_a_failed_job_says_why_at_a_glance(make_app, fake) -> None:
    job = fake.add_job("no-torch", state="failed", started_at=NOW - 30, ended_at=NOW - 20,
                       exit_code=1, message="exit code 1")
    fake.append_log(job.id, "x" * 100_000 + "\n" + TRACEBACK + "cleanup done\n")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_job(pilot, job.id)
        header = text_of(screen.query_one("#job-header"))
        assert "ModuleNotFoundError: No module named 'torch'" in header
        assert "exit code 1: exit code 1" not in header


async def test_a_read_that_fails_is_said_and_the_view_recovers(make_app, fake) -> None:
    from nai_server.protocol import ConnectionFailed

    job = long_log(fake, 50_000)
    app = make_app()
    async with app.run_test(size=(100, 20)) as pilot:
        screen = await open_job(pilot, job)
        log = screen.query_one(LogView)
        works = fake.log_range
        for failure in (ConnectionFailed("lab: link down"), RuntimeError("a bug")):
            def broken(*args: object, failure: Exception = failure) -> tuple[bytes, int]:
                raise failure

            fake.log_range = broken  # type: ignore[method-assign]
            await pilot.press("g")
            await settle(pilot)
            assert str(failure) in on_screen(log)[-1]
            fake.log_range = works  # type: ignore[method-assign]
            await pilot.press("g")
            await settle(pilot)
            assert on_screen(log)[0] == "line 1" and "top of the log" in on_screen(log)[-1]
            await pilot.press("G")
            await settle(pilot)
