"""Output readers forked by the fork server (no Python started per ended job) are held
to what a helper process of their own was: each runs as the job's owner, holds no
descriptor of the daemon's or of the server's (the server's socket would let its holder
ask for readers as anyone), and is killed at its deadline; one server serves many
collections, and one that dies is replaced."""

from __future__ import annotations

import os
import signal
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from nai_server.core.trees import UNLIMITED, TreeError
from nai_server.host import output_helpers, outputs
from nai_server.host.output_helpers import ForkServer
from nai_server.store.blobs import BlobStore
from nai_server.testing import wait_for

NOBODY = outputs.RunAs(65534, 65534, ())


@pytest.fixture
def forks() -> Iterator[ForkServer]:
    server = ForkServer(as_daemon=True)  # as a personal daemon: readers may stay as it
    yield server
    server.close()


@pytest.fixture
def output() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        out = Path(tmp) / "output"
        out.mkdir(mode=0o755)
        (out / "a.txt").write_text("hi")
        yield out


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


@pytest.mark.skipif(os.geteuid() != 0, reason="readers as another user need root")
def test_a_forked_reader_runs_as_the_owner_with_nothing_of_the_daemons(
        forks: ForkServer, output: Path, tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    tree = outputs.collect(blobs, output, UNLIMITED, NOBODY, 30, forks=forks)
    assert [(e.path, blobs.open(e.sha256).read()) for e in blobs.get_tree(tree)] == [
        ("a.txt", b"hi")]
    (output / "secret").write_text("root's")
    os.chmod(output / "secret", 0o600)
    with pytest.raises(TreeError, match="secret: cannot be read"):
        outputs.collect(blobs, output, UNLIMITED, NOBODY, 30, forks=forks)
    os.unlink(output / "secret")

    # A reader caught mid-answer (the pipe full, nobody reading): who it is, what it holds.
    (output / "big").write_bytes(b"x" * (4 << 20))
    reader = forks.spawn(NOBODY.uid, NOBODY.gid, (), output, 100)
    try:
        wait_for(lambda: _status(reader.pid)["State"].startswith("S"), what="the reader to block")
        status = _status(reader.pid)
        assert status["Uid"].split()[:2] == ["65534", "65534"]
        assert status["Groups"].strip() == ""
        assert int(status["PPid"]) == forks._proc.pid  # type: ignore[union-attr]
        held = {int(fd): os.readlink(f"/proc/{reader.pid}/fd/{fd}")
                for fd in os.listdir(f"/proc/{reader.pid}/fd")}
        assert (held.pop(0), held.pop(2)) == ("/dev/null", "/dev/null")
        assert held.pop(1).startswith("pipe:")
        # The rest: what it reads (output/, its directories, the file it sends), and
        # no socket (the server's would let it ask for readers as anyone).
        assert held and all(p.startswith(str(output)) for p in held.values()), held
        assert os.getsid(reader.pid) == reader.pid  # a session of its own
    finally:
        reader.kill()
        reader.wait()
        reader.stdout.close()


def test_one_server_serves_many_collections_and_a_dead_one_is_replaced(
        forks: ForkServer, output: Path, tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    first = outputs.collect(blobs, output, UNLIMITED, outputs.RunAs(), 30, forks=forks)
    server = forks._proc
    assert server is not None and server.poll() is None
    for _ in range(3):
        assert outputs.collect(blobs, output, UNLIMITED, outputs.RunAs(), 30,
                               forks=forks) == first
    assert forks._proc is server  # the same server each time
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    # The collection under way when it died still ends well (a helper of its own), and
    # a new server takes the next.
    assert outputs.collect(blobs, output, UNLIMITED, outputs.RunAs(), 30,
                           forks=forks) == first
    assert outputs.collect(blobs, output, UNLIMITED, outputs.RunAs(), 30,
                           forks=forks) == first
    assert forks._proc is not None and forks._proc is not server


def test_a_forked_reader_is_killed_at_its_deadline(
        forks: ForkServer, output: Path) -> None:
    (output / "big").write_bytes(b"x" * (4 << 20))
    reader = forks.spawn(None, None, (), output, 100)
    wait_for(lambda: _status(reader.pid)["State"].startswith("S"), what="the reader to block")
    assert reader.poll() is None
    reader.kill()
    wait_for(lambda: reader.poll() is not None, what="the reader to die")
    reader.wait()
    reader.stdout.close()


def test_a_server_that_cannot_serve_leaves_collections_to_helpers_for_a_while(
        forks: ForkServer, output: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that dies at once (a host without pidfds, say) costs one failed start,
    not one per collection: helpers collect meanwhile."""
    broken = tmp_path / "broken.py"
    broken.write_text("raise SystemExit(1)\n")
    monkeypatch.setattr(output_helpers, "output_forks", types.SimpleNamespace(__file__=str(broken)))
    blobs = BlobStore(tmp_path / "blobs")
    tree = outputs.collect(blobs, output, UNLIMITED, outputs.RunAs(), 30, forks=forks)
    assert [e.path for e in blobs.get_tree(tree)] == ["a.txt"]
    assert forks._proc is None and forks._failed_at is not None
    started = []
    monkeypatch.setattr(forks, "_server", lambda: started.append(1))
    assert outputs.collect(blobs, output, UNLIMITED, outputs.RunAs(), 30, forks=forks) == tree
    assert started == []  # not tried again so soon
