"""What a dataset processing job's spec says of its processor (pure): the variables the
daemon sets in its `env`, read back by the job (`nai_server.plugins.process_job`) and
by the runtime for the new version's lineage."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

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
