"""`nai --version`, `nai-server --version` and `nai-admin --version` (issue 17, item 12)
print their version on stdout and exit 0, without a server."""

from __future__ import annotations

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
