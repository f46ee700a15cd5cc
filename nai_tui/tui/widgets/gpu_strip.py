"""`GpuStrip`: every GPU on one compact line — utilisation, a memory bar, who holds
it, and processes the daemon did not start (foreign use). As many GPUs side by side
as the width allows."""

from __future__ import annotations

import math

from rich.console import Group
from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.message import Message
from textual.widget import Widget

from nai_server.protocol import GpuList, GpuState
from nai_tui.tui.widgets.format import bar

CELL = 39  # columns per GPU, the gap included: two side by side in 80 columns
GIB = 1 << 30


def gpu_line(gpu: GpuState, width: int = CELL - 2) -> Text:
    """One GPU: `3 ▕█▌   ▏ 42% mem ▕██··· 31/80G  #12 alice`."""
    line = Text(f"{gpu.index:>2} ", style="bold")
    line.append_text(bar(gpu.utilization / 100, 5))
    line.append(f" {gpu.utilization:>3}%", style="bold" if gpu.utilization else "dim")
    total = gpu.memory_total or 1
    line.append(" ")
    line.append_text(bar(gpu.memory_used / total, 5))
    line.append(f" {gpu.memory_used / GIB:>2.0f}/{gpu.memory_total / GIB:.0f}G ")
    if gpu.job is not None:
        line.append(f"#{gpu.job} {gpu.user or ''}", style="cyan")
    if gpu.foreign:
        who = ",".join(sorted({p.user or f"pid {p.pid}" for p in gpu.foreign}))
        used = sum(p.used_memory for p in gpu.foreign)
        line.append(("+" if gpu.job is not None else "") + f"⚠{who} {used / GIB:.0f}G",
                    style="bold yellow")
    elif gpu.job is None:
        line.append("free", style="dim green")
    line.truncate(width, overflow="ellipsis")
    return line


class GpuStrip(Widget):
    """The server's GPUs; `update_gpus` replaces what it shows. Clicking a GPU posts
    `GpuStrip.Clicked`."""

    DEFAULT_CSS = """
    GpuStrip {
        height: auto;
        padding: 0 1;
        border-top: solid $primary-darken-2;
        border-title-color: $text-muted;
    }
    """

    class Clicked(Message):
        """A GPU was clicked."""

        def __init__(self, gpu: GpuState) -> None:
            super().__init__()
            self.gpu = gpu

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.gpus: GpuList | None = None
        self.usage = ""  # who uses how many (see `widgets.usage.strip_summary`)
        self.border_title = "GPUs"

    def update_usage(self, summary: str) -> None:
        """Show who holds how many GPUs (and who is over their fair share) in the title."""
        if summary != self.usage:
            self.usage = summary
            self._title()

    def update_gpus(self, gpus: GpuList | None) -> None:
        """Show these GPUs (None: unknown, e.g. while connecting)."""
        if gpus == self.gpus and gpus is not None:
            return  # most polls: nothing to repaint
        old = len(self.gpus.gpus) if self.gpus else -1
        self.gpus = gpus
        self._title()
        self.refresh(layout=(len(gpus.gpus) if gpus else -1) != old)

    def _title(self) -> None:
        gpus = self.gpus
        if gpus is None:
            return
        slots = f" · CPU slots {gpus.cpu_slots_used}/{gpus.cpu_slots}"
        self.border_title = (f"{len(gpus.gpus)} GPUs ({gpus.source}){slots}"
                             + (f" · {gpus.note}" if gpus.note else "")
                             + (f" · by user: {self.usage}" if self.usage else ""))

    def _columns(self, width: int) -> int:
        return max(1, width // CELL)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        count = len(self.gpus.gpus) if self.gpus else 0
        return max(1, math.ceil(count / self._columns(width)))

    def render(self) -> Group | Text:
        if self.gpus is None:
            return Text("GPUs: waiting for the server…", style="dim")
        if not self.gpus.gpus:
            return Text("no GPUs on this server: CPU jobs only", style="dim")
        columns = self._columns(self.content_size.width)
        cell = max(CELL, self.content_size.width // columns)
        lines = []
        for row in range(0, len(self.gpus.gpus), columns):
            line = Text()
            for gpu in self.gpus.gpus[row:row + columns]:
                text = gpu_line(gpu, cell - 2)
                text.pad_right(cell - text.cell_len)
                line.append_text(text)
            lines.append(line)
        return Group(*lines)

    def on_click(self, event: events.Click) -> None:
        if not self.gpus or not self.gpus.gpus:
            return
        offset = event.get_content_offset(self)
        if offset is None:
            return
        columns = self._columns(self.content_size.width)
        cell = max(CELL, self.content_size.width // columns)
        index = offset.y * columns + min(columns - 1, offset.x // cell)
        if 0 <= index < len(self.gpus.gpus):
            self.post_message(self.Clicked(self.gpus.gpus[index]))
