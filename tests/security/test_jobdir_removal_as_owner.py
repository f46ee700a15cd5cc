"""What the daemon removes from job directories, it never walks with root's rights
where a user can reach: through the real daemon (root) as real unix users.

A daemon killed while it started a job (after the job's directory was built, before
the wrapper was told to go) queues the job again at its next start, without that
directory. Meanwhile the directory's output/ is its owner's, reachable (job
directories are 0711 and the owner knows the path): whatever they put there, a folder
swapped for a FIFO (root's rmtree would block on it for good), one swapped for a link
(it would open it), or another's folder mounted there (it would delete through it).

A job that runs again after a preemption reclaims its directory; one made by an older
version was its owner's, who may have left a folder at the name of the log, of the
metrics file, or of a mount (dataset/, model/), and mounted another's folder in it:
root's rmtree deleted through it, and unmount's walk chmodded by path (a folder
swapped for a link meanwhile made root chmod the link's target).

Here bob's folder, which alice may read but not change, is mounted in alice's folder:
it and its file stay as they were, the job runs all the same, and the folder is left
for an admin under jobs/.discarded/.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, UnixUser  # type: ignore[import-not-found]

from nai_server.host.launchers.local import STATUS_FILE
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")

# Imported by the daemon's Python at its start (first on its PYTHONPATH): while the
# marker file exists, the daemon is killed (SIGKILL) right where it would tell a job's
# wrapper to go, once: a daemon that died while starting the job.
DIE_AT_GO = """\
import os, re, signal
_marker = os.environ.get("NAI_TEST_DIE_AT_GO")
if _marker:
    _write = os.write

    def _dying_write(fd, data, _write=_write, _marker=_marker):
        if re.fullmatch(rb"go( [^\\n]*)?\\n", bytes(data)) and os.path.exists(_marker):
            os.unlink(_marker)
            os.kill(os.getpid(), signal.SIGKILL)
        return _write(fd, data)

    os.write = _dying_write
"""


@pytest.fixture
def mounted() -> Iterator[list[Path]]:
    """Bind mounts made by the test, undone at its end wherever they went."""
    made: list[Path] = []
    yield made
    out = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True)
    for target in reversed(out.stdout.split()):
        if any(target.startswith(str(root)) for root in made):
            subprocess.run(["umount", "-l", target], capture_output=True)


def bobs_folder(where: Path, bob: UnixUser) -> Path:
    """A folder of bob's that alice may read, not change."""
    where.mkdir(mode=0o755)
    precious = where / "bob"
    precious.mkdir(mode=0o755)
    (precious / "keep.txt").write_text("bob's work\n")
    os.chown(precious, bob.uid, bob.gid)
    os.chown(precious / "keep.txt", bob.uid, bob.gid)
    return precious


def as_user(user: UnixUser, *argv: str) -> None:
    subprocess.run(argv, user=user.uid, group=user.gid, extra_groups=[], check=True)


def mount_in(folder: Path, name: str, user: UnixUser, precious: Path,
             mounted: list[Path], state: Path) -> None:
    """What alice makes in her folder: a folder, with bob's folder mounted on it."""
    as_user(user, "mkdir", str(folder / name))
    subprocess.run(["mount", "--bind", str(precious), str(folder / name)], check=True)
    mounted.append(state)


def untouched(precious: Path, bob: UnixUser) -> None:
    st = os.lstat(precious)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o755, bob.uid)
    assert (precious / "keep.txt").read_text() == "bob's work\n"


def submit(daemon: Daemon, user: UnixUser, command: str, **spec: Any) -> int:
    made = daemon.as_user(user, "POST", "/v1/jobs",
                          {"spec": {"command": command, "gpus": 0, **spec}})
    assert made.status == 201, made.json()
    return int(made.json()["id"])


def info(daemon: Daemon, user: UnixUser, job: int) -> dict[str, Any]:
    return daemon.as_user(user, "GET", f"/v1/jobs/{job}").json()


def ended(daemon: Daemon, user: UnixUser, job: int) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        seen = info(daemon, user, job)
        return seen if seen["state"] in TERMINAL_STATES else None

    return wait_for(look, timeout=120, what=f"job {job} to end")


def left_for_an_admin(daemon: Daemon) -> None:
    wait_for(lambda: "could not be removed safely" in daemon.log(), timeout=60,
             what="the removal to give up on alice's folder")


def killed_while_starting(daemon_factory: Any, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch, user: UnixUser
                          ) -> tuple[Daemon, int, Path]:
    """A daemon killed while it started `user`'s job (`echo ran`): the daemon (down),
    the job, and the job's directory, which nothing runs in."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DIE_AT_GO)
    marker = tmp_path / "die-at-go"
    marker.touch()
    monkeypatch.setenv("PYTHONPATH", f"{hook}:{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("NAI_TEST_DIE_AT_GO", str(marker))
    daemon: Daemon = daemon_factory(jobs={"collect_timeout_seconds": 5})
    daemon.start()
    assert daemon.admin("user", "add", user.name).returncode == 0
    job = submit(daemon, user, "echo ran")
    assert daemon.proc is not None
    wait_for(lambda: daemon.proc.poll() is not None, timeout=60,  # type: ignore[union-attr]
             what="the daemon to die while starting the job")
    assert daemon.proc.returncode == -signal.SIGKILL
    job_dir = daemon.state / "jobs" / str(job)
    wait_for(lambda: b"unstarted" in (job_dir / STATUS_FILE).read_bytes(),
             what="the wrapper to see the daemon gone")
    return daemon, job, job_dir


def test_a_half_started_jobs_output_is_emptied_as_its_owner(
        daemon_factory: Any, make_user: Any, tmp_path: Path, mounted: list[Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = make_user(), make_user()
    precious = bobs_folder(tmp_path / "shared", bob)
    daemon, job, job_dir = killed_while_starting(daemon_factory, tmp_path, monkeypatch, alice)
    # While the daemon is down, alice's output/ is hers to fill.
    mount_in(job_dir / "output", "sub", alice, precious, mounted, daemon.state)

    daemon.start()
    wait_for(lambda: info(daemon, alice, job)["state"] != "starting"
             or not (precious / "keep.txt").exists(), what="the job to be queued again")
    untouched(precious, bob)
    assert ended(daemon, alice, job)["state"] == "succeeded"  # built again, and run
    assert "ran" in daemon.as_user(alice, "GET", f"/v1/jobs/{job}/logs").body.decode()
    left_for_an_admin(daemon)
    untouched(precious, bob)
    (kept,) = (daemon.state / "jobs" / ".discarded").iterdir()
    assert (kept / "output" / "sub" / "keep.txt").exists()


def test_what_its_owner_could_remove_goes_whole(
        daemon_factory: Any, make_user: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders alice made unwritable and unreadable in her output/ are hers to open
    up: the half-started job's directory goes whole, nothing is left for an admin."""
    alice = make_user()
    daemon, job, job_dir = killed_while_starting(daemon_factory, tmp_path, monkeypatch, alice)
    output = job_dir / "output"
    as_user(alice, "mkdir", "-p", str(output / "a" / "b" / "c"))
    as_user(alice, "touch", str(output / "a" / "b" / "c" / "file"))
    as_user(alice, "chmod", "500", str(output / "a" / "b"))
    as_user(alice, "chmod", "000", str(output / "a" / "b" / "c"))

    daemon.start()
    assert ended(daemon, alice, job)["state"] == "succeeded"
    wait_for(lambda: not (daemon.state / "jobs" / ".discarded").exists(),
             what="the half-started job's directory to go")
    assert "could not be removed safely" not in daemon.log()


AGAIN = ('if [ -e "$NAI_OUTPUT_DIR/once" ]; then echo again; '
         'else touch "$NAI_OUTPUT_DIR/once"; exec sleep 600; fi')


@pytest.mark.parametrize("name", ["log", "dataset"])
def test_a_folder_left_in_an_older_job_directory_is_emptied_as_its_owner(
        daemon_factory: Any, make_user: Any, tmp_path: Path, mounted: list[Path],
        name: str) -> None:
    daemon: Daemon = daemon_factory(
        gpus=1, jobs={"cancel_grace_seconds": 0, "collect_timeout_seconds": 5},
        scheduler={"fairshare": {"preempt_min_run": 0, "las_threshold": 0.1}})
    daemon.start()
    alice, bob = make_user(), make_user()
    for user in (alice, bob):
        assert daemon.admin("user", "add", user.name).returncode == 0
    precious = bobs_folder(tmp_path / "shared", bob)

    job = submit(daemon, alice, AGAIN, gpus=1, preemptible=True)
    wait_for(lambda: info(daemon, alice, job)["state"] == "running", what="alice's job")
    # bob's job holds the GPU until the test lets it end: alice's job waits meanwhile.
    blocker = submit(daemon, bob, 'while [ ! -e "$HOME/go" ]; do sleep 0.2; done', gpus=1)
    wait_for(lambda: info(daemon, bob, blocker)["state"] == "running"
             and info(daemon, alice, job)["state"] == "queued", what="the preemption")

    # The directory as an older version kept it: alice's, and she leaves a folder at
    # `name` with bob's folder mounted in it.
    job_dir = daemon.state / "jobs" / str(job)
    os.chown(job_dir, alice.uid, alice.gid)
    os.chmod(job_dir, 0o755)
    as_user(alice, "rm", "-rf", str(job_dir / name))
    as_user(alice, "mkdir", str(job_dir / name))
    mount_in(job_dir / name, "sub", alice, precious, mounted, daemon.state)

    (bob.home / "go").touch()
    wait_for(lambda: info(daemon, alice, job)["state"] != "queued"
             or not (precious / "keep.txt").exists(), what="alice's job to start again")
    untouched(precious, bob)
    done = ended(daemon, alice, job)
    assert done["state"] == "succeeded", done
    assert "again" in daemon.as_user(alice, "GET", f"/v1/jobs/{job}/logs").body.decode()
    left_for_an_admin(daemon)
    untouched(precious, bob)
    (kept,) = (daemon.state / "jobs" / ".discarded").iterdir()
    assert (kept / "sub" / "keep.txt").exists()
