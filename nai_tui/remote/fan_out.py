"""One question asked of several servers at once (`nai jobs --all-servers`, `--server
auto`, the TUI's all-servers view): each server in a thread of its own, the answers in
the servers' order. One that fails, or has not answered within the timeout, is
reported with its reason in one line; the others' answers stand."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from nai_server.protocol import ApiError, NaiError
from nai_tui.config import ServerEntry
from nai_tui.remote.client import ServerClient

DEFAULT_TIMEOUT = 20.0  # seconds a server has to answer before it is shown as down
Connect = Callable[[ServerEntry], AbstractContextManager[ServerClient]]


@dataclass
class Answer:
    """One server's answer: `value`, or why there is none. `refused`: the server
    answered, but said no (an API error); otherwise it is down."""

    server: str
    value: Any = None
    error: str | None = None
    refused: bool = False
    code: str | None = None  # the API error's code when refused ("not_found", ...)

    @property
    def status(self) -> str:
        return "up" if self.error is None else "refused" if self.refused else "down"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.server, "status": self.status, "error": self.error}


def one_line(text: str) -> str:
    return " ".join(text.split())


def ask_all(entries: Sequence[ServerEntry], connect: Connect,
            ask: Callable[[ServerClient], Any],
            timeout: float = DEFAULT_TIMEOUT) -> list[Answer]:
    """`ask(client)` of every server at once, in the order given. A server that has not
    answered after `timeout` seconds is left behind (its thread is a daemon's: it does
    not keep the program from exiting)."""
    answers: dict[str, Answer] = {}

    def run(entry: ServerEntry) -> None:
        try:
            with connect(entry) as client:
                answers[entry.name] = Answer(entry.name, ask(client))
        except ApiError as exc:
            answers[entry.name] = Answer(entry.name, error=one_line(str(exc)), refused=True,
                                         code=exc.code)
        except NaiError as exc:
            answers[entry.name] = Answer(entry.name, error=one_line(str(exc)))
        except Exception as exc:  # one server's fault must not hide the others
            answers[entry.name] = Answer(entry.name, error=one_line(
                f"{type(exc).__name__}: {exc}"))

    threads = [threading.Thread(target=run, args=(e,), daemon=True, name=f"nai-{e.name}")
               for e in entries]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [answers.get(e.name) or Answer(e.name, error=f"no answer in {timeout:g}s")
            for e in entries]
