"""The jobs table split by concern: what a row shows and how it is drawn
(`job_cells`, plain functions), the cursor (`job_cursor`), and the table that holds
them (`job_table`), each under the ~400-line house limit."""

from __future__ import annotations

from pathlib import Path

from rich.style import Style

from nai_server.protocol import JobInfo
from nai_tui.tui.screens import jobs, marked
from nai_tui.tui.widgets import job_cells, job_cursor, job_table
from nai_tui.tui.widgets.columns import COLUMNS


def job(job_id: int, name: str, state: str = "queued", **fields: object) -> JobInfo:
    base: dict[str, object] = {
        "id": job_id, "name": name, "user": "alice", "group": None, "state": state,
        "spec": {"gpus": 1}, "code_tree": None, "gpus": [], "submitted_at": 100.0 - job_id}
    return JobInfo(**{**base, **fields})  # type: ignore[arg-type]


def test_rows_sort_by_any_column_and_the_header_says_which() -> None:
    jobs = [job(1, "b-run", "running", started_at=10.0), job(2, "A-run"),
            job(3, "c-run", "failed", started_at=20.0, ended_at=30.0)]
    column = [key for key, _, _ in COLUMNS].index("name")
    assert [j.id for j in sorted(jobs, key=job_cells.sort_key(column, 50.0))] == [2, 1, 3]
    time = [key for key, _, _ in COLUMNS].index("time")
    assert [j.id for j in sorted(jobs, key=job_cells.sort_key(time, 50.0))] == [2, 3, 1]
    labels = [text for text, _ in job_cells.header(column, True)]
    assert labels[column].endswith("▼") and not labels[0].endswith(("▲", "▼"))
    assert job_cells.header(None, False) == job_cells.HEADER


def test_a_row_is_drawn_at_its_widths_with_the_mark_first() -> None:
    cells = job_cells.job_cells(job(7, "a-very-long-job-name"), 100.0,
                                (4, 6, 6, 8, 4, 6, 6, 10))
    assert cells[0] == ("7", "") and cells[1][0] == "a-ver…"
    widths = (4, 6, 6, 8, 4, 6, 6, 10)
    strip = job_cells.draw_row(cells, widths, 80, Style(), Style(), marked=True)
    text = strip.text
    assert text.startswith("●   7  a-ver…  alice") and len(text) == 80


def test_the_table_modules_stay_under_the_house_limit() -> None:
    for module in (job_table, job_cells, job_cursor, jobs, marked):
        assert module.__file__ is not None
        assert len(Path(module.__file__).read_text().splitlines()) < 400, module.__name__


def test_the_gpu_column_says_how_many_and_which_as_the_cli_does() -> None:
    from nai_tui.cli.output import gpus_cell
    from nai_tui.tui.widgets import format as fmt
    from nai_tui.tui.widgets.columns import fit_columns

    one = job(1, "one", "running", started_at=10.0, gpus=[0])
    four = job(2, "four", "running", started_at=10.0, gpus=[0, 1, 2, 3], spec={"gpus": 4})
    assert fmt.gpus_text(one) == "1:0"  # not a bare `0`, which reads as none
    assert fmt.gpus_text(four) == "4:0-3"
    assert fmt.gpus_text(one, long=True) == gpus_cell(one) == "1 (gpu 0)"
    assert fit_columns([one, four])["gpus"] == len("4:0-3")  # still narrow
    assert fmt.gpus_text(job(3, "waits")) == "(1)"
