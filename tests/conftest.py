"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app.use_cases import UseCases
from nai_server.testing import AsPeer, make_service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[UseCases]:
    svc = make_service(tmp_path / "state")
    yield svc
    svc.close()


@pytest.fixture
def api(service: UseCases) -> Iterator[TestClient]:
    """The API in process, called by this process's own user (the personal owner)."""
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as client:
        yield client
