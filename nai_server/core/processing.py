"""What a dataset processing job's spec says of its processor (pure): the variables the
daemon sets in its `env`, read back by the job (`nai_server.plugins.process_job`) and
by the runtime for the new version's lineage. And an annotate session's (a service of
kind "annotator", `app/annotator_services.py`): its replica's variables, and the
lineage of the version its labels become."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

PLUGIN_VAR = "PROCESSOR"
OPTIONS_VAR = "PROCESSOR_OPTIONS"  # JSON: {key: value}, all strings
GIVEN_VAR = "PROCESSOR_GIVEN"  # JSON: the keys of OPTIONS_VAR the user gave with -o
VERSION_VAR = "PROCESSOR_VERSION"


def plugin_path(daemon_path: str | None) -> str | None:
    """The daemon's PYTHONPATH (where its environment finds plugins) as a job or replica
    of a user gets it: its absolute entries only. An empty or relative entry names the
    working directory, which holds the user's data (a dataset an annotator shows, a
    model's files): its files must never be imported as the plugin's modules."""
    kept = [p for p in (daemon_path or "").split(":") if p.startswith("/")]
    return ":".join(kept) or None


def processor_env(plugin: str, version: str | None, options: Mapping[str, str],
                  given: Iterable[str] = ()) -> dict[str, str]:
    """What a processing job reads of its processor: `options` are the admin's with the
    user's over them, `given` the keys the user gave (the job says whence a bad one came)."""
    return {PLUGIN_VAR: plugin, OPTIONS_VAR: json.dumps(dict(options), sort_keys=True),
            GIVEN_VAR: json.dumps(sorted(given)), VERSION_VAR: version or ""}


def given_keys(env: Mapping[str, str], var: str) -> list[str] | None:
    """The keys the user gave with -o, as `var` of a job's or replica's environment
    says; None where it does not (submitted by a daemon that did not set it)."""
    try:
        keys = json.loads(env[var])
    except (KeyError, ValueError):
        return None
    return [str(k) for k in keys] if isinstance(keys, list) else None


def processor_lineage(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The processor a processing job's spec names, for its output's lineage."""
    if PLUGIN_VAR not in env:
        return None
    try:
        options = json.loads(env.get(OPTIONS_VAR) or "{}")
    except ValueError:
        options = {}
    return {"plugin": env[PLUGIN_VAR], "version": env.get(VERSION_VAR) or None,
            "options": options if isinstance(options, dict) else {}}


# --- annotators (`nai dataset annotate`) ----------------------------------------------

ANNOTATOR_VAR = "ANNOTATOR"
ANNOTATOR_OPTIONS_VAR = "ANNOTATOR_OPTIONS"
ANNOTATOR_GIVEN_VAR = "ANNOTATOR_GIVEN"  # as GIVEN_VAR
ANNOTATOR_VERSION_VAR = "ANNOTATOR_VERSION"
PROCESS = "process"  # a Job's `made_by` when `nai dataset process` submitted it
ANNOTATOR_KIND = "annotator"  # a service's `kind` when `nai dataset annotate` made it
FINISH_PATH = "/_nai/finish"  # POSTed through the proxy: save the labels and stop
HEALTH_PATH = "/_nai/health"


def annotator_env(plugin: str, version: str | None, options: Mapping[str, str],
                  output: str, given: Iterable[str] = ()) -> dict[str, str]:
    """What an annotator session's replica reads of its annotator (and where it writes
    its labels: `output`, the session's own folder, kept across the replica's runs);
    `options` and `given` as for `processor_env`."""
    return {ANNOTATOR_VAR: plugin, ANNOTATOR_OPTIONS_VAR: json.dumps(dict(options),
                                                                    sort_keys=True),
            ANNOTATOR_GIVEN_VAR: json.dumps(sorted(given)),
            ANNOTATOR_VERSION_VAR: version or "", "NAI_OUTPUT_DIR": output}


def is_session(doc: Mapping[str, Any]) -> bool:
    """Whether a service document is an annotate session. Only the annotate request
    writes `kind` (a service's create request has no such field, and no model's
    `serve:` section sets it): what a user's spec or env says never makes one."""
    return doc.get("kind") == ANNOTATOR_KIND and isinstance(doc.get("annotation"), dict)


def unsaved(doc: Mapping[str, Any]) -> bool:
    """An annotate session whose labels are not saved yet: its document stays."""
    return is_session(doc) and not doc["annotation"].get("done")


def session_lineage(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The lineage of the version an annotate session's labels become: the source
    version, the annotator (name, version, options), the session and who labelled."""
    note = doc["annotation"]
    return {"datasets": [doc["model"]], "service": doc["name"],
            "annotator": {"plugin": note["plugin"], "version": note.get("version") or None,
                          "options": dict(note.get("options") or {})},
            "labelled_by": sorted(set(note.get("labelled_by") or []))}
