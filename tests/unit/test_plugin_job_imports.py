"""The jobs that run plugins as their users start without the daemon's side.

A processing job (`python -m nai_server.plugins.process_job`) is a plain job: each one
started by importing the plugins package, whose daemon half (its config, the protocol,
pydantic) cost it about 0.25 s of its start, paid again for every processed version.
"""

from __future__ import annotations

import subprocess
import sys

DAEMON_SIDE = ("pydantic", "nai_server.config", "nai_server.protocol",
               "nai_server.plugins.registry", "nai_server.plugins.host")


def test_a_processing_job_imports_nothing_of_the_daemon() -> None:
    probe = ("import sys, nai_server.plugins.process_job; "
             f"print(' '.join(m for m in {DAEMON_SIDE!r} if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True).stdout.split()
    assert found == []


def test_the_package_still_offers_the_daemon_its_names() -> None:
    import nai_server.plugins as plugins
    from nai_server.plugins.host import CHOICES, PluginHost
    from nai_server.plugins.registry import PluginRegistry, PluginStatus

    assert (plugins.PluginHost, plugins.PluginRegistry, plugins.PluginStatus,
            plugins.CHOICES) == (PluginHost, PluginRegistry, PluginStatus, CHOICES)
    try:
        plugins.Nothing  # noqa: B018
    except AttributeError as exc:
        assert "Nothing" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_users_jobs_get_only_the_absolute_entries_of_the_daemons_pythonpath() -> None:
    from nai_server.core.processing import plugin_path

    assert plugin_path("/srv/site::.:lib:/opt/more") == "/srv/site:/opt/more"
    assert plugin_path(":") is None
    assert plugin_path(None) is None
