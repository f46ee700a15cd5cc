"""The plugin contracts: every kind of plugin, its entry-point group and its pluggy hook
specification, in this one module (DESIGN §12).

A plugin is a Python distribution that names an object (a module, a class, an instance)
under one of the entry-point groups in `GROUPS`; the object's functions marked
`@hookimpl` implement that kind's hook. The entry point's name is the plugin's name,
and the server config's `plugins.NAME` section enables and configures it:

    [project.entry-points."nai.submit_rules"]
    max_gpus_per_user = "my_package.rules"

Hooks that run in the daemon (submit rules, notifiers) are called one plugin at a time,
each bounded in time; a plugin that raises or hangs is logged with its name and the
others still run. Code that touches users' data (dataset processors, annotators) runs
as the user's job or service, never in the daemon, which does not even import it: the
daemon lists a dataset processor from its entry point and the job loads it
(`nai_server.plugins.process_job`); an annotator's web app is served by the user's
service, an annotate session (`nai_server.plugins.annotator_replica`), reached through
the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pluggy

PROJECT = "nai"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Mark a plugin's hook implementations: `@hookimpl def nai_submit_rule(...)`."""


class Kind(StrEnum):
    """What a plugin does, one entry-point group each."""

    SUBMIT_RULE = "submit_rule"
    NOTIFIER = "notifier"
    DATASET_PROCESSOR = "dataset_processor"
    ANNOTATOR = "annotator"
    CLIENT_COMMAND = "client_command"


GROUPS: dict[Kind, str] = {
    Kind.SUBMIT_RULE: "nai.submit_rules",
    Kind.NOTIFIER: "nai.notifiers",
    Kind.DATASET_PROCESSOR: "nai.dataset_processors",
    Kind.ANNOTATOR: "nai.annotators",
    Kind.CLIENT_COMMAND: "nai.client_commands",
}

IN_DAEMON: tuple[Kind, ...] = (Kind.SUBMIT_RULE, Kind.NOTIFIER)
"""The kinds whose hooks the daemon calls itself, each call bounded in time."""
AS_JOB: tuple[Kind, ...] = (Kind.DATASET_PROCESSOR, Kind.ANNOTATOR)
"""The kinds the daemon lists and runs as the user's job, never importing them."""


# --- submit rules ---------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """A job as submitted, before the server's own checks: who asks, and the spec's
    fields as `nai.yaml` names them (`time_limit` in seconds, `memory` in bytes)."""

    user: str
    groups: tuple[str, ...]
    admin: bool
    spec: Mapping[str, Any]


class Refuse(Exception):
    """Raised by a submit rule to refuse the job; the message reaches the user, so say
    what to change ("at most 4 GPUs per user; ask for fewer")."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SubmitRuleSpec:
    """The `nai.submit_rules` contract (like Slurm's job_submit plugins)."""

    @hookspec
    def nai_submit_rule(self, submission: Submission,
                        options: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """See a job at submit. Return None to let it pass as it is, a mapping of spec
        fields to change it (e.g. `{"time_limit": 3600}`), or raise `Refuse(message)`
        to refuse it. `options` is the plugin's `plugins.NAME.options` from the server
        config. Rules run one after another in name order, each seeing the spec as the
        ones before left it; the changed spec is validated like a submitted one."""


# --- notifiers ------------------------------------------------------------------------

EVENTS = ("started", "succeeded", "failed", "preempted", "cancelled")


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job. `event` is one of `EVENTS`; `state` is the
    job's state after it (a preempted job is back in the queue)."""

    event: str
    job_id: int
    user: str
    group: str | None
    name: str
    state: str
    at: float
    exit_code: int | None = None
    message: str | None = None


class NotifierSpec:
    """The `nai.notifiers` contract."""

    @hookspec
    def nai_job_event(self, event: JobEvent, options: Mapping[str, Any]) -> None:
        """Be told of a job event, after the daemon committed it. Called from the
        notifier worker thread, never from the scheduler; events may be dropped when
        notifiers fall far behind, and a call that outlasts its timeout is abandoned."""

    @hookspec(firstresult=True)
    def nai_notify_check(self, target: str, options: Mapping[str, Any]) -> None:
        """Optional: vet the address a user subscribes with (`nai notify add NAME
        TARGET`): raise `Refuse(message)` if this notifier cannot or may not send there.
        A notifier without `nai_notify_user` cannot be subscribed to at all."""

    @hookspec
    def nai_notify_user(self, event: JobEvent, target: str, options: Mapping[str, Any]) -> None:
        """Optional: tell one user, at the address they subscribed with, of an event of
        one of their own jobs (only theirs ever reach this call). Bounded like
        `nai_job_event`; a user whose address hangs delays only their own notices."""


# --- options of dataset processors and annotators --------------------------------------


class PluginOptionsSpec:
    """The hook dataset processors and annotators share: the options they take."""

    @hookspec(firstresult=True)
    def nai_plugin_options(self) -> Mapping[str, str] | None:
        """Optional: the options this plugin takes, each name with one line of help that
        says its default (`{"seed": "the shuffle's seed (default 0)"}`; `{}`: none).
        With it, the job (or annotate session) checks the options before the plugin
        touches any file: a key not named here fails it at once, the error naming the
        key, whether it came from the user's `-o` or the admin's `plugins.NAME.options`,
        the closest option named here, and this list with its help, which is how users
        learn what the plugin takes. Without it, every option is passed on unchecked.
        Called in the user's job, like the plugin's other hook, never in the daemon."""


# --- dataset processors ---------------------------------------------------------------


class DatasetProcessorSpec(PluginOptionsSpec):
    """The `nai.dataset_processors` contract: `nai dataset process SRC --with NAME`,
    and its options (`nai_plugin_options`, optional)."""

    @hookspec(firstresult=True)
    def nai_process_dataset(self, source: Path, target: Path,
                            options: Mapping[str, str]) -> Mapping[str, Any] | None:
        """Make a new dataset version: read the input version's files under `source`
        (read-only) and write the new version's under `target` (empty at first).
        `options` are the user's `-o key=value` pairs over the admin's
        `plugins.NAME.options`, all strings (only those `nai_plugin_options` names, if
        the plugin implements it). Runs in the user's job, as the user, on
        a CPU slot or the GPUs the job asked for. Return None or a small JSON-able
        report (written to the job's log); raise to fail the job (the error is the
        last line of its log, and no version is made)."""


# --- annotators ----------------------------------------------------------------------

LABELS_FILE = "labels.jsonl"
"""Where an annotator saves its labels in `target`, one JSON object a line, appended as
each label is made: `{"item": PATH, "label": ..., "by": USER, "at": UNIX_TIME}`."""
USER_HEADER = "x-nai-user"
"""The header that names who sent a request to an annotator's app, set by the daemon
(which drops any the caller sent) from the connection's unix user."""


class AnnotatorSpec(PluginOptionsSpec):
    """The `nai.annotators` contract: `nai dataset annotate NAME --with PLUGIN`, and its
    options (`nai_plugin_options`, optional)."""

    @hookspec(firstresult=True)
    def nai_annotator_app(self, source: Path, target: Path,
                          options: Mapping[str, str]) -> Any:
        """Return the web app where people label the dataset: an ASGI application
        (Starlette's, FastAPI's, or any callable `app(scope, receive, send)`).
        `source` holds the input version's files (read-only); save labels under
        `target` as they are made (`LABELS_FILE`, appended; a person's work must survive
        the session ending at any moment, and `target` keeps what an earlier run of the
        app wrote), which becomes the dataset's next version when the session stops
        (or fails). `options` are as for a dataset processor. The app runs in the
        user's service (an annotate session), as the user, on a unix socket the daemon
        relays to at `/v1/services/NAME/invoke/PATH` and `nai service forward NAME`
        serves at `http://127.0.0.1:PORT/PATH`: the app sees `/PATH` either way (write
        links relative to its root). `USER_HEADER` names who is asking. Paths under
        `/_nai/` are nai's own (`POST /_nai/finish`, answered by the daemon, saves the
        labels and ends the session)."""


# --- client commands ------------------------------------------------------------------
# Loaded by `nai` on the user's machine (nai_tui/cli/plugin_commands.py), which sees only
# nai_server.protocol: so this contract is plain attributes, not a pluggy hook. An entry
# point `NAME = "pkg.mod[:obj]"` in `nai.client_commands` adds `nai NAME`; its object has
#     help: str                                one line for `nai --help`
#     run(args, client) -> int                 the command; client: a connected
#                                              nai_tui.remote.client.ServerClient
#     add_arguments(parser) -> None            optional, its argparse arguments
#     remote: bool = True                      False: run(args) alone, no server
#     json: bool = False                       True: it takes --json
# Built-in commands win over a plugin's of the same name; a plugin that fails to load
# prints one warning line and is skipped; one whose run raises ends with status 1.


SPECS: dict[Kind, type] = {Kind.SUBMIT_RULE: SubmitRuleSpec, Kind.NOTIFIER: NotifierSpec,
                           Kind.DATASET_PROCESSOR: DatasetProcessorSpec,
                           Kind.ANNOTATOR: AnnotatorSpec}
HOOKS: dict[Kind, str] = {Kind.SUBMIT_RULE: "nai_submit_rule", Kind.NOTIFIER: "nai_job_event",
                          Kind.DATASET_PROCESSOR: "nai_process_dataset",
                          Kind.ANNOTATOR: "nai_annotator_app"}
