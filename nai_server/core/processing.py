"""What a dataset processing job's spec says of its processor (pure): the variables the
daemon sets in its `env`, read back by the job (`nai_server.plugins.process_job`) and
by the runtime for the new version's lineage."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nai_server.core.states import JobState

PLUGIN_VAR = "PROCESSOR"
OPTIONS_VAR = "PROCESSOR_OPTIONS"  # JSON: {key: value}, all strings
VERSION_VAR = "PROCESSOR_VERSION"


def processor_env(plugin: str, version: str | None, options: Mapping[str, str]) -> dict[str, str]:
    return {PLUGIN_VAR: plugin, OPTIONS_VAR: json.dumps(dict(options), sort_keys=True),
            VERSION_VAR: version or ""}


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
ANNOTATE = "annotate"  # a Job's `made_by` when `nai dataset annotate` submitted it
PROCESS = "process"  # ... and when `nai dataset process` did
ANNOTATOR_OPTIONS_VAR = "ANNOTATOR_OPTIONS"
ANNOTATOR_VERSION_VAR = "ANNOTATOR_VERSION"
ANNOTATE_UNTIL_VAR = "ANNOTATE_SECONDS"  # the job's time limit: the runner ends cleanly before
APP_DIR = "code"  # the job's own directory in its job dir, where its app's socket is
APP_SOCKET = "annotate.sock"


def annotator_env(plugin: str, version: str | None, options: Mapping[str, str],
                  seconds: int | None) -> dict[str, str]:
    env = {ANNOTATOR_VAR: plugin, ANNOTATOR_OPTIONS_VAR: json.dumps(dict(options),
                                                                    sort_keys=True),
           ANNOTATOR_VERSION_VAR: version or ""}
    if seconds is not None:
        env[ANNOTATE_UNTIL_VAR] = str(seconds)
    return env


def annotator_lineage(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The annotator an annotate job's spec names, for its labels' lineage."""
    if ANNOTATOR_VAR not in env:
        return None
    try:
        options = json.loads(env.get(ANNOTATOR_OPTIONS_VAR) or "{}")
    except ValueError:
        options = {}
    return {"plugin": env[ANNOTATOR_VAR], "version": env.get(ANNOTATOR_VERSION_VAR) or None,
            "options": options if isinstance(options, dict) else {}}


KEPT_WHEN_STOPPED = (JobState.CANCELLED, JobState.TIMED_OUT)


def keeps_labels(made_by: str | None, final: str) -> bool:
    """Whether a job that ended `final` without finishing still registers its output: an
    annotate job's labels are people's work, saved as the next version when the session
    is cancelled or runs out of time too (a processing job's partial output is not).
    Known by the job's `made_by`, which only the annotate request sets: any job may
    set ANNOTATOR in its env, and keeping a stopped job's partial outputs is not theirs
    to ask."""
    return made_by == ANNOTATE and final in KEPT_WHEN_STOPPED
