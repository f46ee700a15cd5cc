"""Fixtures for the TUI's Pilot tests against the in-memory FakeServerClient."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tui_kit import NOW, app_factory

from nai_tui.testing import FakeServerClient
from nai_tui.testing_demo import demo_server
from nai_tui.tui.app import NaiApp


@pytest.fixture
def fake() -> FakeServerClient:
    return demo_server(NOW)


@pytest.fixture
def make_app(tmp_path: Path, fake: FakeServerClient) -> Callable[..., NaiApp]:
    return app_factory(tmp_path, fake)
