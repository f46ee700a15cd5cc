"""Two people label one dataset at once in the `labels` annotator's page, in a real
headless browser (the distribution's Chromium, driven by Playwright), each through
their own `nai service forward` to the annotate session (a service) as their own unix
user and the real daemon: each sees the other's labels, and the version saved by the
page's "Finish and save" holds both people's labels, each under the name of who made
it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest
from conftest import Daemon, UnixUser, needs_root  # type: ignore[import-not-found]
from plug_support import nai_as  # type: ignore[import-not-found]
from test_annotate_daemon import (  # type: ignore[import-not-found]
    annotating,
    labels_of,
    saved,
    started,
)

__all__ = ["annotating"]  # a fixture: the daemon, alice, bob and the dataset `photos`
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [needs_root, pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium here (.ci/run installs it: apt-get install chromium)")]
# As root in a container: no sandbox, no GPU, nothing fetched on the side.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def forwards() -> Iterator[list[subprocess.Popen[str]]]:
    made: list[subprocess.Popen[str]] = []
    yield made
    for proc in made:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def opened(daemon: Daemon, user: UnixUser, name: str,
           forwards: list[subprocess.Popen[str]]) -> str:
    """The local address where `user`'s own `nai service forward` serves the session."""
    proc = nai_as(user, "service", "forward", name, "--port", "0",
                  socket=daemon.socket, wait=False)
    forwards.append(proc)
    assert proc.stdout is not None and proc.stderr is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
    return url


def test_two_people_label_at_once_in_a_real_browser(annotating, make_user, forwards) -> None:
    from playwright.sync_api import expect, sync_playwright

    daemon, alice, _bob, _tree = annotating
    carol = make_user()
    assert daemon.admin("user", "add", carol.name).returncode == 0
    assert daemon.admin("group", "add", "lab").returncode == 0
    for user in (alice, carol):
        assert daemon.admin("group", "add-member", "lab", user.name).returncode == 0
    # The dataset is shared with the group: its members may label it.
    assert daemon.as_user(alice, "PUT", "/v1/datasets/photos/sharing",
                          {"groups": ["lab"]}).status == 200
    session = started(daemon, alice, to="lab-labels", group="lab")
    urls = {user.name: opened(daemon, user, session, forwards) for user in (alice, carol)}

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=FLAGS)
        try:
            pages = {}
            for name, url in urls.items():  # one browser profile each: two people
                page = browser.new_context().new_page()
                page.goto(url)
                expect(page.locator("#count")).to_have_text("0 / 3 labelled")
                expect(page.locator("#name")).to_have_text("a.txt")
                pages[name] = page
            mine, theirs = pages[alice.name], pages[carol.name]
            expect(mine.locator("#item")).to_contain_text("a cat sat")

            mine.keyboard.press("1")  # a.txt: cat, and on to b.txt
            expect(mine.locator("#count")).to_have_text("1 / 3 labelled")
            expect(mine.locator("#name")).to_have_text("b.txt")
            # Carol, still on a.txt, moves on by the arrow keys and labels the image.
            theirs.keyboard.press("ArrowRight")
            theirs.keyboard.press("ArrowRight")
            expect(theirs.locator("#name")).to_have_text("img/c.png")
            theirs.keyboard.press("2")
            # Her answer counts alice's label too.
            expect(theirs.locator("#count")).to_have_text("2 / 3 labelled")
            mine.locator("#classes button", has_text="dog").click()  # b.txt: dog
            expect(mine.locator("#count")).to_have_text("3 / 3 labelled")
            # On to img/c.png, where alice's page shows carol's label as chosen.
            expect(mine.locator("#name")).to_have_text("img/c.png")
            expect(mine.locator("#classes button.on")).to_have_text("2 dog")

            mine.on("dialog", lambda dialog: dialog.accept())
            mine.locator("#finish").click()
            expect(mine.locator("body")).to_contain_text("Saved")
        finally:
            browser.close()

    info = saved(daemon, alice, session)
    assert info["state"] == "stopped" and info["saved"] == "lab-labels@1", info
    assert sorted(labels_of(daemon, carol, "lab-labels@1")) == [
        ("a.txt", "cat", alice.name), ("b.txt", "dog", alice.name),
        ("img/c.png", "dog", carol.name)]
    entry = daemon.as_user(carol, "GET", "/v1/datasets/lab-labels").json()
    assert entry["owner"] == {"group": "lab"} and len(entry["versions"]) == 1
    lineage = entry["versions"][0]["metadata"]["lineage"]
    assert lineage["labelled_by"] == sorted([alice.name, carol.name])
