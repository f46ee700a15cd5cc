"""`ServicesScreen`: the services this user may see, the selected one's replicas,
request metrics and log; stop, update, scale, and forward a local port to it."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

from pydantic import ValidationError
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Header, RichLog, Static
from textual.worker import Worker

from nai_server.protocol import (
    Invalid,
    ServiceCreate,
    ServiceInfo,
    ServiceState,
    ServiceUpdate,
    format_elapsed,
)
from nai_tui.tui.screens.base import PollingScreen
from nai_tui.tui.widgets.footer import Footer

LOG_LINES = 200  # of the selected replica's log, the last ones
_STATE_STYLE = {"ready": "green", "starting": "yellow", "pending": "yellow",
                "unhealthy": "red", "failed": "bold red", "stopped": "dim"}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def service_row(s: ServiceInfo) -> list[Any]:
    """The columns `nai services` prints, in the same order."""
    ready = sum(r.state == ServiceState.READY for r in s.replica_info)
    return [s.name, s.source(), Text(s.state, style=_STATE_STYLE.get(s.state, "")),
            f"{ready}/{s.replicas}", str(s.gpus * s.replicas), f"{s.stats.per_second:.1f}",
            _ms(s.stats.p50_ms), _ms(s.stats.p99_ms)]


def about(s: ServiceInfo, now: float) -> Text:
    owner = f"group {s.owner['group']}" if "group" in s.owner else s.owner.get("user", "?")
    text = Text(f"service {s.name}", style="bold")
    text.append(f" · {s.source()} · {s.state} · owner {owner} · {s.visibility}")
    text.append(f"\nrequests {s.stats.requests} ({s.stats.errors} errors) · "
                f"{s.stats.per_second:.1f}/s · p50 {_ms(s.stats.p50_ms)} · "
                f"p99 {_ms(s.stats.p99_ms)}")
    if s.message:
        text.append(f"\n{s.message}", style="red")
    for r in s.replica_info:
        up = format_elapsed(now - r.started_at) if r.started_at else "-"
        text.append(f"\n  replica {r.index}: ")
        text.append(r.state, style=_STATE_STYLE.get(r.state, ""))
        text.append(f" {r.model} · GPUs {','.join(map(str, r.gpus)) or 'none'} · "
                    f"pid {r.pid or '-'} · up {up} · restarts {r.restarts} · "
                    f"{r.stats.requests} req · p50 {_ms(r.stats.p50_ms)}"
                    + (f" · {r.message}" if r.message else ""))
    return text


class ServicesScreen(PollingScreen):
    """The list above; the selected service's replicas, metrics and log below."""

    DEFAULT_CSS = """
    ServicesScreen #services-list { height: 1fr; }
    ServicesScreen #services-detail { height: 2fr; border-top: hkey $primary-darken-2; }
    ServicesScreen #services-about { height: auto; padding: 0 1; }
    ServicesScreen #services-log { height: 1fr; }
    ServicesScreen #services-status { height: 1; padding: 0 1; color: $text-muted;
                                      background: $boost; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", tooltip="Back to the jobs"),
        Binding("x", "stop", "Stop", tooltip="Stop the selected service (after you confirm)"),
        Binding("u", "update", "Update", tooltip="Serve another model version (rolling)"),
        Binding("plus", "scale", "Scale", tooltip="Set how many replicas run"),
        Binding("f", "forward", "Forward",
                tooltip="Relay a local port (127.0.0.1) to the selected service"),
        Binding("r", "refresh", "Refresh", tooltip="Reload the list now"),
    ]

    class Fetched(Message):
        """The services, and the selected one's log tail."""

        def __init__(self, services: list[ServiceInfo], name: str | None, log: str) -> None:
            super().__init__()
            self.services, self.name, self.log = services, name, log

    class Changed(Message):
        """A service was started, stopped, updated or scaled."""

        def __init__(self, service: ServiceInfo, what: str) -> None:
            super().__init__()
            self.service, self.what = service, what

    def __init__(self, select: str | None = None) -> None:
        super().__init__()
        self.services: dict[str, ServiceInfo] = {}
        self._select = select  # to show once listed
        self.shown: str | None = None  # the service whose detail is shown
        self.forwards: dict[str, Any] = {}  # service name → its ServiceForwarder

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="services-list", cursor_type="row", zebra_stripes=True)
        with Vertical(id="services-detail"):
            yield Static("", id="services-about")
            yield RichLog(id="services-log", max_lines=LOG_LINES * 2)
        yield Static("loading…", id="services-status")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.title = "Services"
        self.query_one("#services-list", DataTable).add_columns(
            "NAME", "MODEL", "STATE", "READY", "GPUS", "REQ/S", "P50", "P99")
        self.query_one("#services-list").focus()

    # --- fetching -----------------------------------------------------------------------

    @property
    def selected_name(self) -> str | None:
        table = self.query_one("#services-list", DataTable)
        if not table.row_count:
            return self._select
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def fetch(self) -> Worker[Any]:
        return self._fetch(self._select or self.selected_name)

    @work(thread=True, exit_on_error=False, group="services")
    def _fetch(self, name: str | None) -> None:
        api = self.nai.api
        services = api.services().services
        log = ""
        if name is None and services:
            name = services[0].name
        if name is not None and any(s.name == name for s in services):
            raw = api.service_logs(name, 0)
            log = "\n".join(raw.decode(errors="replace").splitlines()[-LOG_LINES:])
        self.post_message(self.Fetched(services, name, log))

    def on_services_screen_fetched(self, message: Fetched) -> None:
        self.services = {s.name: s for s in message.services}
        table = self.query_one("#services-list", DataTable)
        selected = self._select or self.selected_name
        self._select = None
        table.clear()
        for s in message.services:
            table.add_row(*service_row(s), key=s.name)
        if selected in self.services:
            table.move_cursor(row=table.get_row_index(selected))
        forwards = "".join(f" · {n} forwarded from 127.0.0.1:{f.port}"
                           for n, f in self.forwards.items())
        self.query_one("#services-status", Static).update(
            f"{len(message.services)} service(s){forwards}" if message.services else
            "no services: select a model version (M) and press s to serve it")
        self.shown = message.name if message.name in self.services else None
        self._show(self.services.get(message.name or ""), message.log)

    def _show(self, service: ServiceInfo | None, log: str) -> None:
        self.query_one("#services-about", Static).update(
            about(service, time.time()) if service else "")
        view = self.query_one("#services-log", RichLog)
        view.clear()
        if service is not None and log:
            view.write(log)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        # Rebuilding the list moves the cursor through other rows: only where it rests
        # (and shows another service than the detail does) is worth a fetch.
        name = event.row_key.value
        if (event.cursor_row == event.data_table.cursor_row and name in self.services
                and name != self.shown):
            self._select = str(name)
            self.poll(again=True)

    def action_refresh(self) -> None:
        """Reload the list and the selected service now."""
        self.poll(again=True)

    def action_back(self) -> None:
        """Back to the jobs."""
        self.dismiss()

    # --- changes --------------------------------------------------------------------------

    def _selected_or_say(self) -> ServiceInfo | None:
        service = self.services.get(self.selected_name or "")
        if service is None:
            self.notify("No service selected", severity="warning")
        return service

    def action_stop(self) -> None:
        """Stop the selected service once you confirm."""
        from nai_tui.tui.screens.confirm import ConfirmScreen

        service = self._selected_or_say()
        if service is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._change(service.name, None, "stopped")

        self.app.push_screen(ConfirmScreen(
            f"Stop service {service.name}?", f"Its {service.replicas} replica(s) stop and "
            f"free their GPUs; callers get errors until it is served again.",
            yes="Stop it", no="Keep it"), answered)

    def action_update(self) -> None:
        """Serve another version of the model (new replicas ready before old ones stop)."""
        from nai_tui.tui.screens.prompt import PromptScreen

        service = self._selected_or_say()
        if service is not None:
            def chosen(ref: str | None) -> None:
                try:
                    update = ServiceUpdate(model=ref) if ref else None
                except ValidationError:
                    self.notify(f"Not a model version: {ref!r} (write NAME@VERSION)",
                                severity="error")
                    return
                if update is not None:
                    self._change(service.name, update, f"now {ref}")

            self.app.push_screen(PromptScreen(
                f"Serve {service.name} from", "MODEL@VERSION",
                "a rolling update: no request fails; a version never ready is rolled back",
                value=service.model), chosen)

    def action_scale(self) -> None:
        """Set how many replicas the selected service runs."""
        from nai_tui.tui.screens.prompt import PromptScreen

        service = self._selected_or_say()
        if service is None:
            return

        def chosen(text: str | None) -> None:
            if text is None:
                return
            if not text.isdigit() or int(text) > 64:
                self.notify(f"Not a number of replicas: {text!r}", severity="error")
                return
            self._change(service.name, ServiceUpdate(replicas=int(text)),
                         f"{text} replica(s)")

        self.app.push_screen(PromptScreen(f"Replicas of {service.name}", "a number",
                                          "0 frees its GPUs", value=str(service.replicas)),
                             chosen)

    @work(thread=True, exit_on_error=False, group="change")
    def _change(self, name: str, update: ServiceUpdate | None, what: str) -> None:
        api = self.nai.api
        changed = api.stop_service(name) if update is None else api.update_service(name, update)
        self.post_message(self.Changed(changed, what))

    def on_services_screen_changed(self, message: Changed) -> None:
        self.notify(f"{message.service.name}: {message.what}", title="service")
        self._select = message.service.name
        self.poll(again=True)

    # --- forward --------------------------------------------------------------------------

    def action_forward(self) -> None:
        """Relay a local port to the selected service (again: stop relaying)."""
        from nai_tui.tui.screens.prompt import PromptScreen

        service = self._selected_or_say()
        if service is None:
            return
        running = self.forwards.pop(service.name, None)
        if running is not None:
            running.shutdown()
            running.server_close()
            self.notify(f"{service.name}: no longer forwarded from 127.0.0.1:{running.port}")
            return
        self.app.push_screen(PromptScreen(
            f"Forward a local port to {service.name}", "port on 127.0.0.1 (0: any)",
            "requests to http://127.0.0.1:PORT/... reach the service", value="8080"),
            lambda port: self._forward(service.name, port) if port else None)

    def _forward(self, name: str, port: str) -> None:
        from nai_tui.remote.forward import ServiceForwarder

        try:
            forwarder = ServiceForwarder(self.nai.api, name, int(port),
                                         on_error=lambda m: self.app.call_from_thread(
                                             self.notify, m, severity="warning"))
        except (OSError, ValueError) as exc:
            self.notify(f"Cannot listen on 127.0.0.1:{port}: {exc}", severity="error")
            return
        threading.Thread(target=forwarder.serve_forever, args=(0.2,), daemon=True,
                         name=f"forward-{name}").start()
        self.forwards[name] = forwarder
        self.notify(f"http://127.0.0.1:{forwarder.port} → service {name}", title="forwarding")

    def on_unmount(self) -> None:
        for forwarder in self.forwards.values():
            forwarder.shutdown()
            forwarder.server_close()


def serve_version(api: Any, model: str, version: int, name: str) -> ServiceInfo:
    """A service of one replica of `model@version` (the registry screen's serve key)."""
    if not name:
        raise Invalid("a service needs a name")
    try:
        request = ServiceCreate(name=name, model=f"{model}@{version}")
    except ValidationError:
        raise Invalid(f"{name!r} cannot name a service: 1-64 letters, digits, '.', '_' "
                      f"or '-', starting with a letter or digit") from None
    created: ServiceInfo = api.create_service(request)
    return created


def ask_to_serve(screen: Any, model: str, version: int) -> None:
    """Ask for the service's name, create it, then show it on the services screen."""
    from nai_tui.tui.screens.prompt import PromptScreen

    def served(service: ServiceInfo) -> None:
        screen.app.notify(f"{service.name}: {service.model}, {service.state}",
                          title="service started")
        screen.app.push_screen(ServicesScreen(select=service.name))

    def create(name: str) -> None:
        service = serve_version(screen.nai.api, model, version, name)
        screen.app.call_from_thread(served, service)

    def chosen(name: str | None) -> None:
        if name:
            screen.run_worker(lambda: create(name), thread=True, exit_on_error=False,
                              group="serve", name="serve")

    screen.app.push_screen(PromptScreen(
        f"Serve {model}@{version} as", "the service's name",
        "one replica, with the GPUs its serve: section asks for (else 1)",
        value=model.lower()), chosen)
