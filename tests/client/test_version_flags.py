"""`nai --version`, `nai-server --version` and `nai-admin --version` (issue 17, item 12)
print their version on stdout and exit 0, without a server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version

import pytest

from nai_server import __version__
from nai_server.cli import admin
from nai_server.cli import main as server_main
from nai_server.protocol import API_VERSION
from nai_tui.cli import main as nai_main


@pytest.mark.parametrize(("main", "expected"), [
    (nai_main, f"nai {version('nothingai')} (API {API_VERSION})"),
    (server_main, f"nai-server {__version__}"),
    (admin.main, f"nai-admin {__version__} (API {API_VERSION})"),
])
def test_version_flag(main: Callable[[list[str]], int], expected: str,
                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    out = capsys.readouterr()
    assert exited.value.code in (0, None)
    assert out.out.strip() == expected and out.err == ""


def test_nai_version_imports_no_command() -> None:
    """`nai --version` answers before the parser is built: none of the commands' code
    (the HTTP client, the sync machinery) is imported for it."""
    probe = ("import sys\nfrom nai_tui.cli import main\ntry:\n    main(['--version'])\n"
             "except SystemExit:\n    pass\n"
             "print(sorted(m for m in ('nai_tui.cli.commands', 'nai_tui.remote.client', "
             "'nai_tui.sync.push', 'httpx') if m in sys.modules))")
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    assert ran.stdout.splitlines() == [f"nai {version('nothingai')} (API {API_VERSION})", "[]"]
