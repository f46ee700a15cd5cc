"""The TUI against a real personal daemon (a subprocess on a unix socket), with the
real client, transport and sync: submit an example job through the submit screen,
follow it to the end, read its metrics and pull its outputs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tui_kit import REPO, personal_daemon, settle, text_of

from nai_tui.config import ClientConfig, ServerEntry
from nai_tui.tui.app import NaiApp
from nai_tui.tui.ports import SyncTransfers, connect_entry, reconnects
from nai_tui.tui.screens.job_detail import JobDetailScreen
from nai_tui.tui.screens.submit import SubmitScreen
from nai_tui.tui.widgets.log_view import LogView
from nai_tui.tui.widgets.metric_plot import MetricPanel
from nai_tui.tui.widgets.output_tree import OutputTree

pytestmark = pytest.mark.integration


async def test_submit_follow_and_pull_on_a_real_daemon(tmp_path: Path) -> None:
    with personal_daemon(tmp_path) as sock:
        entry = ServerEntry("here", f"local:{sock}")
        app = NaiApp(connect_entry, config=ClientConfig(tmp_path / "config.yaml"),
                     server=entry, transfers=SyncTransfers(tmp_path / "hashes.sqlite"),
                     downloads=tmp_path / "out", poll_interval=0.2, backoff=reconnects(0.2))
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot)
            assert app.connected and "8 GPUs (fake)" in text_of(app.screen.query_one("#gpus"))
            app.push_screen(SubmitScreen(REPO / "jobs" / "numpy-regression"))
            await settle(pilot)
            assert "numpy-regression" in text_of(app.screen.query_one("#spec-summary"))
            await pilot.press("ctrl+s")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not (isinstance(app.screen, JobDetailScreen) and app.screen.settled):
                assert loop.time() < deadline, "the job did not finish in time"
                await pilot.pause(0.1)
            screen = app.screen
            await settle(pilot)
            assert screen.job is not None and screen.job.state == "succeeded", screen.job
            log = screen.query_one(LogView)
            assert any(line.startswith("done: val_acc") for line in log.lines)
            panel = screen.query_one(MetricPanel)
            assert len(panel.rows) == 40 and "val_acc" in panel.metrics
            assert {e.path for e in screen.query_one(OutputTree).info.entries} == {
                "weights.npz", "summary.json", "predict.py"}
            await pilot.press("P")  # the default place, without asking
            deadline = loop.time() + 30
            dest = tmp_path / "out" / str(screen.job.id)
            while not (dest / "summary.json").exists():
                assert loop.time() < deadline, "outputs were not pulled"
                await pilot.pause(0.05)
            await settle(pilot)
            assert b"val_acc" in (dest / "summary.json").read_bytes()
            assert (dest / "weights.npz").stat().st_size > 0
