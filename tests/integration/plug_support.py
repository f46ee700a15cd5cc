"""`nai` run as a real unix user whose one server is a daemon's local socket (for the
plugin tests: annotators and processors driven through the client as people do)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from conftest import BIN, UnixUser  # type: ignore[import-not-found]


def nai_as(user: UnixUser, *args: str, socket: Path, wait: bool = True) -> Any:
    """`nai ARGS` as `user`: the finished process (wait) or the running one."""
    config = user.home / ".config" / "nai" / "config.yaml"
    if not config.exists():
        config.parent.mkdir(parents=True)
        config.write_text(f'default: here\nservers:\n  here: {{url: "local:{socket}"}}\n')
        for path in (user.home / ".config", config.parent, config):
            os.chown(path, user.uid, user.gid)
    env = {"HOME": str(user.home), "USER": user.name, "PATH": f"{BIN}:/usr/bin:/bin",
           "LANG": "C.UTF-8", **({"PYTHONPATH": os.environ["PYTHONPATH"]}
                                 if "PYTHONPATH" in os.environ else {})}
    argv = [str(BIN / "nai"), *args]
    kwargs: dict[str, Any] = {"user": user.uid, "group": user.gid, "extra_groups": [],
                              "env": env, "cwd": user.home, "text": True,
                              "stdin": subprocess.DEVNULL}
    if wait:
        return subprocess.run(argv, capture_output=True, timeout=120, **kwargs)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
