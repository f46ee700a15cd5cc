"""The options a dataset processor or an annotator takes, checked before it runs (pure).

A plugin that declares its options (`nai_plugin_options`, contracts.py) gets only
those: a key it does not name is a typo or a misunderstanding, and running it with its
defaults instead (then recording the key in the new version's lineage as if it had
mattered) would hide the mistake. The job (or annotate session) that loads the plugin
calls `check_options` before the plugin touches any file; the daemon never does, as it
never imports the plugin. Each bad key is told with where it came from, the user's
`-o KEY=VALUE` or the admin's `plugins.NAME.options`, since only its author can fix it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

GIVEN = "given"  # with `-o` by the user who asked
CONFIG = "config"  # in the server config's plugins.NAME.options
EITHER = "either"  # not known (a job submitted by a daemon that did not say)


class OptionsError(ValueError):
    """A plugin's declared options are not a mapping of names to one line of help."""


@dataclass(frozen=True)
class Unknown:
    """One key the plugin does not take: where it came from, and the closest known."""

    key: str
    origin: str
    closest: str | None


class UnknownOptions(ValueError):
    """Options a plugin does not take. `summary` is one line (the log's last);
    `table` lists the options it takes, one line each with its help."""

    def __init__(self, plugin: str, unknown: list[Unknown], declared: Mapping[str, str],
                 command: str) -> None:
        self.plugin, self.unknown, self.declared = plugin, unknown, dict(declared)
        self.summary = _summary(plugin, unknown, declared, command)
        self.table = takes(plugin, declared)
        super().__init__("\n".join([self.summary, *self.table]))


def declared_options(plugin: str, found: object) -> dict[str, str] | None:
    """What a plugin's `nai_plugin_options` returned, checked: None (it declares
    nothing, so any option passes), or option names with their help."""
    if found is None:
        return None
    if not isinstance(found, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in found.items()):
        raise OptionsError(f"plugin {plugin!r} is broken: its nai_plugin_options returned "
                           f"{type(found).__name__}, not a mapping of option names to one "
                           f"line of help; ask its author (or an admin) to fix it")
    return dict(found)


def origins(options: Collection[str], given: Collection[str] | None) -> dict[str, str]:
    """Where each key of `options` came from: `given` holds the keys the user gave with
    `-o` (None: not known); the others came from the server config."""
    if given is None:
        return dict.fromkeys(options, EITHER)
    return {key: GIVEN if key in given else CONFIG for key in options}


def check_options(plugin: str, declared: Mapping[str, str] | None,
                  options: Mapping[str, str], given: Collection[str] | None,
                  command: str) -> None:
    """Raise `UnknownOptions` if `options` hold a key that `declared` does not name.
    `declared` None (a plugin without the hook) lets every option through; `given` as
    for `origins`; `command` is what the user runs again, e.g. `nai dataset process`."""
    if declared is None or all(key in declared for key in options):
        return
    import difflib  # only on the way to failing: every processing job starts here

    whence = origins(options, given)
    unknown = [Unknown(key, whence[key], next(iter(
        difflib.get_close_matches(key, sorted(declared), n=1, cutoff=0.6)), None))
        for key in sorted(options) if key not in declared]
    raise UnknownOptions(plugin, unknown, declared, command)


def takes(plugin: str, declared: Mapping[str, str]) -> list[str]:
    """The lines that list what `plugin` takes: its options with their help, in the
    plugin's order."""
    if not declared:
        return [f"{plugin} takes no options"]
    width = max(len(name) for name in declared)
    return [f"{plugin} takes these options:",
            *(f"  {name.ljust(width)}  {help_}" for name, help_ in declared.items())]


def _summary(plugin: str, unknown: list[Unknown], declared: Mapping[str, str],
             command: str) -> str:
    def one(bad: Unknown) -> str:
        where = {GIVEN: "given with -o",
                 CONFIG: f"from the server config, plugins.{plugin}.options",
                 EITHER: f"given with -o or from plugins.{plugin}.options"}[bad.origin]
        return f"{_short(bad.key)!r} ({where}" + (f"; did you mean {bad.closest!r}?)"
                                          if bad.closest else ")")
    fixes = []
    if any(bad.origin != CONFIG for bad in unknown):
        fixes.append(f"fix -o and run `{command}` again")
    if any(bad.origin != GIVEN for bad in unknown):
        fixes.append(f"ask an admin to fix plugins.{plugin}.options in the server config")
    option = "option" if len(unknown) == 1 else "options"
    known = f"it takes {', '.join(declared)}" if declared else "it takes none"
    return (f"{plugin} has no {option} {'; '.join(one(bad) for bad in unknown)}; {known}: "
            f"{' and '.join(fixes)}")


def _short(key: str, most: int = 40) -> str:
    """A key as the message names it: a long one cut (an option may be 32 KiB)."""
    return key if len(key) <= most else key[:most] + "..."
