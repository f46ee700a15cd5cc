"""App-wide messages, named as facts. Workers post them; screens and the app react.

Workers run in threads and only `post_message` these; nothing in a worker touches
a widget.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.message import Message

from nai_server.protocol import GroupInfo, JobInfo, Me, TreeInfo, UserInfo
from nai_tui.config import ServerEntry
from nai_tui.remote.client import ServerClient


@dataclass
class Connected(Message):
    """A client for `server` answered: its version matches and it knows who we are."""

    server: ServerEntry
    client: ServerClient
    me: Me


@dataclass
class ConnectionLost(Message):
    """`server` could not be reached (first failure or a failed retry)."""

    server: str
    error: str


@dataclass
class WorkFailed(Message):
    """A worker raised; the app maps the error to a notification."""

    error: BaseException
    what: str = ""


@dataclass
class ServerProbed(Message):
    """A configured server was tried: `error` is None when it answered."""

    server: str
    error: str | None
    user: str | None = None


@dataclass
class JobRefreshed(Message):
    """The latest state of one job."""

    job: JobInfo


@dataclass
class MetricsArrived(Message):
    """A job's metrics lines from line `since` on; `next` continues after them."""

    job_id: int
    since: int
    rows: list[dict[str, Any]]
    next: int


@dataclass
class OutputsListed(Message):
    """A finished job's output tree."""

    job_id: int
    tree: TreeInfo


@dataclass
class TransferProgressed(Message):
    """Bytes moved so far of a sync or download."""

    done: int
    total: int | None
    label: str = ""


@dataclass
class DownloadFinished(Message):
    """Outputs landed on disk."""

    job_id: int
    dest: Path
    files: int
    skipped: int = 0
    kept: tuple[str, ...] = ()  # local files a pull did not overwrite


@dataclass
class JobSubmitted(Message):
    """The server accepted a new job."""

    job: JobInfo


@dataclass
class JobCancelled(Message):
    """A cancel went through (a running job may still be stopping)."""

    job: JobInfo


@dataclass
class AccountsLoaded(Message):
    """Users, groups and the drain flag, for the admin screen."""

    users: list[UserInfo]
    groups: list[GroupInfo]
    drained: bool
