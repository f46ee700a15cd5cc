"""The services screen (V) and the registry's serve key (s on a model version),
against the demo fake server given an in-memory services API."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from textual.widgets import DataTable, RichLog
from tui_kit import SIZE, notifications, settle, text_of

from nai_server.protocol import (
    NotFound,
    ReplicaInfo,
    RequestStats,
    ServiceCreate,
    ServiceInfo,
    ServiceUpdate,
)
from nai_tui.testing import FakeServerClient
from nai_tui.tui.screens.confirm import ConfirmScreen
from nai_tui.tui.screens.prompt import PromptScreen
from nai_tui.tui.screens.registry import RegistryScreen
from nai_tui.tui.screens.services import ServicesScreen

NOW = 1_700_000_000.0


def _service(name: str, model: str, state: str = "ready", replicas: int = 1,
             **stats: Any) -> ServiceInfo:
    info = [ReplicaInfo(index=i, state=state, model=model, gpus=[i], pid=4000 + i,
                        stats=RequestStats(requests=10 * (i + 1), p50_ms=2.0))
            for i in range(replicas)]
    return ServiceInfo(name=name, owner={"user": "alice"}, user="alice", model=model,
                       state=state, visibility="private", replicas=replicas, gpus=1,
                       created_at=NOW, updated_at=NOW, replica_info=info,
                       stats=RequestStats(**stats))


class Services:
    """The services calls, in memory, put on a fake server instance."""

    def __init__(self, fake: FakeServerClient) -> None:
        self.services = {
            "resnet": _service("resnet", "resnet18-cifar@1", replicas=2, requests=30,
                               per_second=4.5, p50_ms=2.25, p99_ms=9.5),
            "bert": _service("bert", "bert@3", state="starting"),
        }
        self.logs = {"resnet": b"nai replica: resnet18-cifar@1 loaded in 0.20s\n"}
        self.created: list[ServiceCreate] = []
        self.updates: list[tuple[str, ServiceUpdate | None]] = []
        fake.services = self.listing  # type: ignore[method-assign]
        fake.service = self.get  # type: ignore[method-assign]
        fake.create_service = self.create  # type: ignore[method-assign]
        fake.update_service = self.update  # type: ignore[method-assign]
        fake.stop_service = self.stop  # type: ignore[method-assign]
        fake.service_logs = lambda name, replica=0, offset=0: self.logs.get(name, b"")  # type: ignore[method-assign]

    def listing(self) -> Any:
        from nai_server.protocol import ServiceList
        return ServiceList(services=list(self.services.values()))

    def get(self, name: str) -> ServiceInfo:
        if name not in self.services:
            raise NotFound(f"no service {name}")
        return self.services[name]

    def create(self, request: ServiceCreate) -> ServiceInfo:
        self.created.append(request)
        made = _service(request.name, request.model, state="pending")
        self.services[request.name] = made
        return made

    def update(self, name: str, update: ServiceUpdate) -> ServiceInfo:
        self.updates.append((name, update))
        changed = self.get(name).model_copy(update=update.model_dump(exclude_none=True))
        self.services[name] = changed
        return changed

    def stop(self, name: str) -> ServiceInfo:
        self.updates.append((name, None))
        stopped = self.get(name).model_copy(update={"state": "stopped", "replica_info": []})
        self.services[name] = stopped
        return stopped


@pytest.fixture
def services(fake: FakeServerClient) -> Services:
    return Services(fake)


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def rows(table: DataTable) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def open_services(pilot: Any) -> ServicesScreen:
    await settle(pilot)
    await pilot.press("V")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, ServicesScreen)
    return screen


async def test_the_list_and_the_selected_services_replicas_metrics_and_log(
        make_app: Any, services: Services) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_services(pilot)
        listed = rows(screen.query_one("#services-list", DataTable))
        assert listed == [
            ["resnet", "resnet18-cifar@1", "ready", "2/2", "2", "4.5", "2.2ms", "9.5ms"],
            ["bert", "bert@3", "starting", "0/1", "1", "0.0", "-", "-"]]
        about = text_of(screen.query_one("#services-about"))
        assert "service resnet" in about and "p99 9.5ms" in about
        assert "replica 1: ready resnet18-cifar@1" in about and "20 req" in about
        log = screen.query_one("#services-log", RichLog)
        assert "loaded in 0.20s" in "\n".join(str(line.text) for line in log.lines)
        await pilot.press("down")
        await settle(pilot)
        assert screen.shown == "bert"
        assert "service bert" in text_of(screen.query_one("#services-about"))
        await pilot.press("escape")
        assert app.screen is app.screen_stack[0]


async def test_stop_asks_first(make_app: Any, services: Services) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_services(pilot)
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert services.updates == []
        await pilot.press("x", "y")
        await settle(pilot)
        assert services.updates == [("resnet", None)]
        assert services.services["resnet"].state == "stopped"
        assert any("resnet: stopped" in n for n in notifications(app))
        listed = rows(app.screen.query_one("#services-list", DataTable))
        assert listed[0][:3] == ["resnet", "resnet18-cifar@1", "stopped"]


async def test_update_and_scale_send_what_was_typed(make_app: Any, services: Services) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_services(pilot)
        await pilot.press("u")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*["backspace"] * 20, *"resnet18-cifar@2", "enter")
        await settle(pilot)
        await pilot.press("plus")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press("backspace", "3", "enter")
        await settle(pilot)
        assert services.updates == [("resnet", ServiceUpdate(model="resnet18-cifar@2")),
                                    ("resnet", ServiceUpdate(replicas=3))]
        await pilot.press("u", *["backspace"] * 20, *"not a ref", "enter")
        await settle(pilot)
        assert any("Not a model version" in n for n in notifications(app))
        assert len(services.updates) == 2


async def test_s_on_a_model_version_serves_it(make_app: Any, services: Services) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("M")
        await settle(pilot)
        assert isinstance(app.screen, RegistryScreen) and app.screen.kind == "model"
        await pilot.press("s")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*["backspace"] * 30, *"cifar", "enter")
        await settle(pilot)
        assert [(c.name, c.model) for c in services.created] == [("cifar", "resnet18-cifar@1")]
        assert isinstance(app.screen, ServicesScreen)
        await settle(pilot)
        assert app.screen.shown == "cifar"


async def test_no_serve_key_on_datasets(make_app: Any, services: Services) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("D", "s")
        await settle(pilot)
        assert isinstance(app.screen, RegistryScreen) and services.created == []


def test_services_screen_snapshot(snap_compare: Any, make_app: Any, services: Services) -> None:
    async def opened(pilot: Any) -> None:
        await open_services(pilot)

    assert snap_compare(make_app(), terminal_size=(100, 30), run_before=opened)


async def test_f_forwards_a_local_port_and_f_again_stops(make_app: Any,
                                                        services: Services) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_services(pilot)
        await pilot.press("f")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*["backspace"] * 6, "0", "enter")
        await settle(pilot)
        forwarder = screen.forwards["resnet"]
        assert forwarder.port > 0 and forwarder.service == "resnet"
        assert any(f"127.0.0.1:{forwarder.port} → service resnet" in n
                   for n in notifications(app))
        await pilot.press("f")
        await settle(pilot)
        assert screen.forwards == {}
        assert any("no longer forwarded" in n for n in notifications(app))
