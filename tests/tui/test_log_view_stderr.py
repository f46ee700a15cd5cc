"""The log view draws what a job wrote to stderr in the theme's error colour, told by
the byte spans the server sends with each range, and keeps a progress bar's `\\r`
redraws as one line; a server that sends no spans shows everything as stdout."""

from __future__ import annotations

from rich.segment import Segment
from tui_kit import SIZE, settle

from nai_server.protocol.jobs import LogPiece
from nai_tui.testing import FakeServerClient
from nai_tui.tui.widgets.job_table import JobTable
from nai_tui.tui.widgets.log_text import error_line, from_stderr, read_whole, window_spans
from nai_tui.tui.widgets.log_view import LogView

LOG = b"starting\n 10%|#\r 50%|###\r100%|#####\nTraceback (most recent call last)\nok\n"
ERR = (LOG.index(b" 10%"), LOG.index(b"ok\n"))  # the progress bar and the traceback


def test_lines_are_stderr_when_most_of_their_bytes_are() -> None:
    starts = [0, 9, LOG.index(b"Trace"), LOG.index(b"ok\n")]
    assert from_stderr(starts, len(LOG), [ERR]) == [False, True, True, False]
    assert from_stderr(starts, len(LOG), []) == [False] * 4
    assert window_spans([(5, 12), (0, 3), (12, 20), (40, 50)], 2, 45) == [(2, 3), (5, 20),
                                                                       (40, 45)]


def test_a_range_cut_short_by_the_server_is_read_whole() -> None:
    calls: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> LogPiece:
        calls.append((offset, length))
        cut = min(offset + 4, len(LOG))  # a server that stops after a few spans
        return LogPiece(offset, LOG[offset:cut], len(LOG), ((offset, offset + 1),))

    got = read_whole(read, 0, 12)
    assert got.data == LOG[:12] and got.stderr == ((0, 1), (4, 5), (8, 9))
    assert calls == [(0, 12), (4, 8), (8, 4)]


def colours(view: LogView, y: int) -> set[str | None]:
    segments: list[Segment] = list(view.render_line(y))
    return {str(s.style.color) if s.style and s.style.color else None
            for s in segments if s.text.strip()}


async def test_stderr_lines_are_drawn_in_the_error_colour(make_app) -> None:
    fake = FakeServerClient("lab")
    job = fake.add_job("noisy", state="failed", started_at=1.0, ended_at=2.0, exit_code=1)
    fake.append_log_bytes(job.id, LOG)
    fake.stderr_spans[job.id] = [ERR]
    app = make_app(servers={"lab": fake})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one(JobTable).select_job(job.id)
        await pilot.press("enter")
        await settle(pilot)
        view = app.screen.query_one(LogView)
        await pilot.press("g")
        await settle(pilot)
        assert view.lines == ["starting", "100%|#####", "Traceback (most recent call last)",
                              "ok"]
        assert view.stderr == [False, True, True, False]
        error = str(view.get_component_rich_style("log-view--stderr").color)
        assert colours(view, 1) == colours(view, 2) == {error}
        assert error not in colours(view, 0) | colours(view, 3)


async def test_without_spans_every_line_is_drawn_alike(make_app) -> None:
    fake = FakeServerClient("lab")
    job = fake.add_job("old", state="succeeded", started_at=1.0, ended_at=2.0, exit_code=0)
    fake.append_log_bytes(job.id, LOG)
    app = make_app(servers={"lab": fake})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one(JobTable).select_job(job.id)
        await pilot.press("enter")
        await settle(pilot)
        view = app.screen.query_one(LogView)
        assert view.stderr == [False] * 4
        assert len({frozenset(colours(view, y)) for y in range(4)}) == 1


def test_the_failed_jobs_note_prefers_what_it_wrote_to_stderr() -> None:
    tail = (b"partial line\nTraceback (most recent call last)\n  File \"x.py\"\n"
            b"ModuleNotFoundError: No module named 'torch'\nerror: retrying in 5s\n")
    start = 1000
    err = (start + tail.index(b"Traceback"), start + tail.index(b"error: retrying"))
    told = LogPiece(start, tail, 5000, (err,))
    assert error_line(told) == "ModuleNotFoundError: No module named 'torch'"
    assert error_line(LogPiece(start, tail, 5000)) == "error: retrying in 5s"  # untold
