"""`nai dataset annotate` through the real `nai` command against a real personal daemon
offering the `labels` annotator: start a session (a service, listed by `nai
services`), open it on a local port with `--open` and label through it, stop it with
`nai service stop`, and find the labels as the dataset's next version with the
annotator in its lineage; an option `labels` does not take fails the session, and
`--open` says why."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nai_server.testing import wait_for
from nai_server.testing.plugin_dist import write_dist

BIN = Path(sys.executable).parent


def nai(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nai"), *args], env=env, capture_output=True,
                          text=True, timeout=180)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A user's environment with a personal daemon that offers `labels`."""
    site = write_dist(tmp_path / "site", "nai-labels", "0.3.0", {},
                      {"nai.annotators": {"labels": "nai_plugins.labels"}})
    environ = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"),
               "XDG_CACHE_HOME": str(tmp_path / "cache"),
               "XDG_DATA_HOME": str(tmp_path / "data"),
               "XDG_RUNTIME_DIR": str(tmp_path / "run"),
               "PYTHONPATH": f"{site}:{os.environ.get('PYTHONPATH', '')}",
               "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    (tmp_path / "run" / "nai").mkdir(parents=True)
    config = tmp_path / "server.yaml"
    config.write_text("plugins:\n  labels:\n    options:\n      classes: cat,dog\n")
    with open(tmp_path / "daemon.log", "ab") as log:
        proc = subprocess.Popen(
            [str(BIN / "nai-server"), "run", "--personal", "--config", str(config),
             "--fake-gpus", "1", "--state-dir", str(tmp_path / "data" / "nai"),
             "--socket", str(tmp_path / "run" / "nai" / "nai.sock")],
            env=environ, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or nai(environ, "jobs").returncode == 0,
                 what="the personal daemon")
        assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
        yield environ
    finally:
        proc.terminate()
        proc.wait(30)


def test_annotate_open_label_stop(env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "photos"
    data.mkdir()
    (data / "a.txt").write_text("a cat\n")
    (data / "b.txt").write_text("a dog\n")
    assert nai(env, "dataset", "push", "photos", str(data)).returncode == 0
    started = nai(env, "dataset", "annotate", "photos@1", "--with", "labels", "--to",
                  "photo-labels", "-o", "keep=labels", "--name", "tagging", "--json")
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    assert (info["name"], info["kind"], info["model"]) == ("tagging", "annotator", "photos@1")
    assert "nai service forward tagging --port 8080" in started.stderr
    assert nai(env, "dataset", "annotate", "photos").returncode != 0  # no --with
    listed = nai(env, "services")
    assert re.search(r"tagging\s+photos@1 \(annotator labels \S+\)", listed.stdout), \
        listed.stdout

    # --open on another session of the same version: it waits for it, then forwards.
    opened = subprocess.Popen([str(BIN / "nai"), "dataset", "annotate", "photos@1", "--with",
                               "labels", "--to", "photo-labels", "-o", "keep=labels",
                               "--open"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert opened.stdout is not None
        lines = iter(opened.stdout.readline, "")
        url = next(line for line in lines if line.startswith("http://127.0.0.1:")).strip()
        with httpx.Client(base_url=url, timeout=30) as http:
            assert "nai labels" in http.get("/").text
            made = http.post("/label", json={"item": "b.txt", "label": "dog"})
            assert made.status_code == 200 and made.json()["labelled"] == 1, made.text
            # The page's "Finish and save": the daemon stops and saves the session.
            assert http.post("/_nai/finish").json()["finishing"] is True
    finally:
        opened.terminate()
        opened.wait(30)
    # Nothing labelled in the first session: stopped, and no version made of it.
    stopped = nai(env, "service", "stop", "tagging")
    assert stopped.returncode == 0, stopped.stderr
    assert "nothing was labelled: no version saved" in stopped.stderr, stopped.stderr

    wait_for(lambda: nai(env, "dataset", "show", "photo-labels@1").returncode == 0,
             timeout=60, what="the labels saved")
    shown = nai(env, "dataset", "show", "photo-labels@1")
    # The version is that of whichever installed distribution ships `labels`.
    assert re.search(r"from:     photos@1 by labels \S+ \(classes=cat,dog, keep=labels\)",
                     shown.stdout), shown.stdout
    pulled = tmp_path / "pulled"
    assert nai(env, "dataset", "pull", "photo-labels@1", "--to", str(pulled)).returncode == 0
    assert sorted(p.name for p in pulled.iterdir()) == ["labels.jsonl"]
    row = json.loads((pulled / "labels.jsonl").read_text())
    assert (row["item"], row["label"]) == ("b.txt", "dog")
    assert nai(env, "dataset", "show", "photo-labels@2").returncode != 0  # one version

    # A typo in an option: the session's replica refuses it before serving (each time
    # it is restarted), and --open ends with the reason once the session has failed.
    typo = nai(env, "dataset", "annotate", "photos@1", "--with", "labels", "--to",
               "photo-labels", "-o", "kep=labels", "--name", "typo", "--open")
    assert typo.returncode != 0, typo.stderr
    assert "labels has no option 'kep' (given with -o; did you mean 'keep'?)" in typo.stderr
    assert "nai dataset annotate photos@1 --with labels" in typo.stderr
    assert nai(env, "dataset", "show", "photo-labels@2").returncode != 0  # no labels made
