"""`nai dataset process` (and `annotate`): a dataset processor (DESIGN §12) run over a
dataset version as the caller's own job, never in the daemon. The daemon checks the
processor is installed and enabled (without importing it), pins the input version the
caller may read, and submits an ordinary job (scheduled on a CPU slot or GPUs like any
other, through the submit rules) that runs `nai_server.plugins.process_job` as the
caller, with the input mounted read-only. When it succeeds, the runtime registers its
output as the next version of the target dataset (`register_dataset`), whose lineage
names the input version, the job, and the processor with its version and options.

An annotator (`nai dataset annotate`) runs as a service instead: see
`app/annotator_services.py`."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from typing import Any

from nai_server.app.accounts import Caller
from nai_server.app.jobs import Jobs
from nai_server.app.registry import Registry, ResolvedRef
from nai_server.core.processing import PROCESS, plugin_path, processor_env
from nai_server.core.spec import SpecError, spec_from_dict
from nai_server.core.spec_fields import MAX_ENV_VALUE
from nai_server.plugins import PluginRegistry
from nai_server.plugins.contracts import Kind
from nai_server.protocol import (
    DatasetAnnotate,
    DatasetProcess,
    Forbidden,
    Invalid,
    JobInfo,
    NotFound,
)

PROCESSOR = "nai_server.plugins.process_job"


class Processing:
    """Dataset processing jobs."""

    def __init__(self, jobs: Jobs, registry: Registry, plugins: PluginRegistry) -> None:
        self.jobs, self.registry, self.plugins = jobs, registry, plugins

    def process(self, caller: Caller, name: str, body: DatasetProcess) -> JobInfo:
        """Submit the job that processes `name@body.version` with `body.plugin`."""
        version, options, source, target = inputs(
            self.plugins, self.registry, caller, name, body, Kind.DATASET_PROCESSOR,
            "dataset processor")
        fields: dict[str, Any] = {
            "command": f"{shlex.quote(sys.executable)} -m {PROCESSOR}",
            "name": body.name or f"process-{source.name}-{body.plugin}"[:64],
            "gpus": body.gpus, "dataset": source.ref, "register_dataset": target,
            **{k: v for k in ("cpus", "memory", "time_limit", "group")
               if (v := getattr(body, k)) is not None}}
        try:
            spec = spec_from_dict(fields, source="dataset process")
        except SpecError as exc:
            raise Invalid(str(exc), details={"field": exc.field}) from exc
        env = processor_env(body.plugin, version, options, body.options)
        if found := plugin_path(os.environ.get("PYTHONPATH")):  # the server's plugins
            env["PYTHONPATH"] = found
        return self.jobs.submit(caller, dataclasses.replace(spec, env=env), None,
                                made_by=PROCESS)


def inputs(plugins: PluginRegistry, registry: Registry, caller: Caller, name: str,
           body: DatasetProcess | DatasetAnnotate, kind: Kind, what: str
           ) -> tuple[str | None, dict[str, str], ResolvedRef, str]:
    """What a processing job or an annotate session runs over, checked: the plugin's
    version (enabled, or NotFound), its options (the admin's, then the caller's), the
    source version the caller may read, and the target dataset they may add to."""
    found = plugins.as_job(kind, body.plugin)
    if found is None:
        raise NotFound(f"no {what} named {body.plugin!r} is enabled on this server; "
                       f"`nai plugins` lists what it offers, and an admin enables an "
                       f"installed one with `nai-admin plugin enable {body.plugin}` (on a "
                       f"personal server, started by `nai up`, you are the admin)")
    config, version = found
    source = registry.resolve(caller, "dataset", f"{name}@{body.version}")
    target = body.to or source.name
    try:
        entry = registry.show(caller, "dataset", target)
    except NotFound:
        entry = None  # made when the version is saved, owned by the caller or the group
    if entry is not None and not entry.may_write:
        raise Forbidden(f"you may not add versions to dataset {target!r}; give another "
                        f"name with --to")
    options = {**{str(k): str(v) for k, v in config.options.items()}, **body.options}
    size = len(json.dumps(options, sort_keys=True).encode())
    if size > MAX_ENV_VALUE:  # one variable of its environment, as a job's env allows
        raise Invalid(f"the {what}'s options take {size} bytes as JSON, more than the "
                      f"{MAX_ENV_VALUE} allowed; keep large settings in a file of the "
                      f"dataset and name it in an option")
    return version, options, source, target
