"""The job that runs a dataset processor (`nai dataset process`), as the user who asked,
never in the daemon: `python -m nai_server.plugins.process_job`.

It reads the processor's name and options from its environment (`PROCESSOR`,
`PROCESSOR_OPTIONS`, set by the daemon in the job's spec), loads that one entry point of
`nai.dataset_processors`, and calls its hook on the job's read-only dataset
(`$NAI_DATASET_DIR`) and its output folder (`$NAI_OUTPUT_DIR`), which the daemon
registers as the new version once the job succeeded. A processor that declares its
options (`nai_plugin_options`) gets only those: any other key fails the job before the
processor runs, naming the key, whence it came and what the processor takes. A
processor that raises ends the job failed, with its error as the last line of the
log."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import pluggy

from nai_server.core.plugin_options import UnknownOptions, check_options, declared_options
from nai_server.core.processing import GIVEN_VAR, OPTIONS_VAR, PLUGIN_VAR, given_keys
from nai_server.plugins.contracts import GROUPS, HOOKS, PROJECT, SPECS, Kind

KIND = Kind.DATASET_PROCESSOR


class ProcessError(Exception):
    """The job cannot run the processor (not installed, no hook, no dataset)."""


def load_plugin(kind: Kind, name: str, what: str,
                error: type[Exception]) -> pluggy.PluginManager:
    """A manager with the plugin `name` of `kind` registered, in the user's job (the
    daemon never imports these); `error` says, naming it as `what`, why it cannot."""
    found = [ep for ep in metadata.entry_points(group=GROUPS[kind]) if ep.name == name]
    if not found:
        raise error(f"no {what} {name!r} is installed in {sys.executable}'s environment")
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(SPECS[kind])
    manager.register(found[0].load(), name=name)
    if not getattr(manager.hook, HOOKS[kind]).get_hookimpls():
        raise error(f"{what} {name!r} implements no {HOOKS[kind]} hook")
    return manager


def check_plugin_options(manager: pluggy.PluginManager, name: str,
                         options: Mapping[str, str], given: list[str] | None,
                         command: str) -> None:
    """Refuse options the plugin does not take (`UnknownOptions`), if it says which it
    takes; `given`: the keys the user gave with -o (None: not known)."""
    declared = declared_options(name, manager.hook.nai_plugin_options())
    check_options(name, declared, options, given, command)


def failed(what: str, exc: Exception) -> None:
    """Tell the job's log why it failed, the one-line reason last (where `nai` and the
    user look): unknown options as the plugin's own list of what it takes, then the
    reason; another error with its traceback."""
    if isinstance(exc, UnknownOptions):
        for line in exc.table:
            print(f"nai: {line}", file=sys.stderr)
        reason = exc.summary
    else:
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}"
    print(f"nai: {what} failed: {reason}", file=sys.stderr, flush=True)


def load(name: str) -> pluggy.PluginManager:
    """A manager with the processor `name` registered."""
    return load_plugin(KIND, name, "dataset processor", ProcessError)


def run(environ: dict[str, str]) -> object:
    """Process the job's dataset into its output folder; the processor's report."""
    name = environ.get(PLUGIN_VAR, "")
    options = json.loads(environ.get(OPTIONS_VAR) or "{}")
    source, target = environ.get("NAI_DATASET_DIR"), environ.get("NAI_OUTPUT_DIR")
    if not name or not source or not target:
        raise ProcessError(f"a processing job needs {PLUGIN_VAR}, a dataset and an output "
                           f"folder; submit it with `nai dataset process`")
    manager = load(name)
    check_plugin_options(manager, name, options, given_keys(environ, GIVEN_VAR),
                         f"nai dataset process DATASET --with {name}")
    print(f"nai: processing {source} with {name} {json.dumps(options, sort_keys=True)}",
          flush=True)
    return manager.hook.nai_process_dataset(source=Path(source), target=Path(target),
                                            options=options)


def main() -> int:
    started = time.monotonic()
    try:
        report = run(dict(os.environ))
    except Exception as exc:  # the job's log is where the user looks
        failed("dataset processor", exc)
        return 1
    if report is not None:
        print(f"nai: report: {json.dumps(report, sort_keys=True, default=str)}", flush=True)
    print(f"nai: done in {time.monotonic() - started:.1f} s; the output becomes the new "
          f"dataset version", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
