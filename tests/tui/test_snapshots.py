"""SVG snapshots of the main screens at fixed sizes, on the demo fake server with a
fixed clock: regenerate with `pytest tests/tui/test_snapshots.py --snapshot-update`
after a deliberate change, and look at the SVGs before committing them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from tui_kit import settle

from nai_tui.tui.widgets.job_table import JobTable

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Wall-clock times on screen are local: pin the zone."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


async def ready(pilot) -> None:
    await settle(pilot)


def test_jobs_screen(snap_compare, make_app) -> None:
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=ready)


def test_jobs_screen_80x24(snap_compare, make_app) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=ready)


def open_job(job_id: int, *keys: str):
    async def run_before(pilot) -> None:
        await settle(pilot)
        pilot.app.screen.query_one(JobTable).select_job(job_id)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press(*keys)
        await settle(pilot)
    return run_before


def test_job_detail_log(snap_compare, make_app) -> None:
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=open_job(1))


def test_job_detail_metrics(snap_compare, make_app) -> None:
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=open_job(1, "2"))


def test_admin_screen(snap_compare, make_app) -> None:
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("A")
        await settle(pilot)
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_datasets_screen(snap_compare, make_app) -> None:
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("D")
        await settle(pilot)
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)
