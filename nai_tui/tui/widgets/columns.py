"""The jobs table's columns, and how wide each is for a width and the jobs shown.

The USER, STATE and GPUS columns have a most they may take (their width in
`job_table.COLUMNS`); when every job shown needs less (short user names, no
"succeeded" on screen), the cells they do not need go to the name and the note: at
80 columns that is what makes names readable."""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len

from nai_server.protocol import JobInfo
from nai_tui.tui.widgets import format as fmt

# (key, label, width or None for the two columns that share what is left)
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("id", "ID", 4), ("name", "NAME", None), ("user", "USER", 8), ("state", "STATE", 9),
    ("gpus", "GPUS", 5), ("time", "RUNTIME", 7), ("age", "AGE", 6),
    ("note", "NOTE", None))
PADDING = 2 * len(COLUMNS)  # one cell of padding on each side of every column
# column → (its header's width, the most it takes)
FITTED = {"user": (4, 8), "state": (5, 9), "gpus": (4, 5)}


def fit_columns(jobs: Sequence[JobInfo]) -> dict[str, int]:
    """The width each fitted column needs for these jobs (at least its header's)."""
    need = {key: low for key, (low, _) in FITTED.items()}
    for job in jobs:
        need["user"] = max(need["user"], cell_len(job.user))
        need["state"] = max(need["state"], len(job.state))
        need["gpus"] = max(need["gpus"], len(fmt.gpus_text(job)))
    return {key: min(need[key], FITTED[key][1]) for key in FITTED}


def widths(width: int, max_id: int, fit: dict[str, int]) -> tuple[int, ...]:
    """Column widths for a table `width` cells wide: the fitted columns as `fit_columns`
    found them; the name and the note share the rest."""
    fixed = {key: size for key, _, size in COLUMNS if size}
    fixed["id"] = max(fixed["id"], len(str(max_id)))
    fixed.update(fit)
    rest = max(20, width - 2 - PADDING - sum(fixed.values()))
    # Names first (they are how you find a job), but never so wide that the table
    # needs a sideways scrollbar: at 80 columns the note keeps its 8 cells.
    name = min(32, max(min(16, rest - 8), rest // 2))
    shared = {"name": name, "note": max(8, rest - name)}
    return tuple(fixed.get(key) or shared[key] for key, _, _ in COLUMNS)
