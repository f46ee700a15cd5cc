"""More test tooling for the TUI: fake transfers over a FakeServerClient, and
`demo_server()`, a busy fake server for tests, snapshots and trying the UI."""

from __future__ import annotations

from pathlib import Path

import httpx

from nai_server.protocol import ForeignProcess, TreeInfo
from nai_server.protocol.usage import UsageReport, UsageRow
from nai_tui.remote.client import ServerClient
from nai_tui.testing import GIB, FakeServerClient, _tree
from nai_tui.tui.ports import Progress, PulledFiles


class FakeTransfers:
    """`Transfers` over a `FakeServerClient`: push records the folder's files, pull
    writes the fake's blobs."""

    def __init__(self) -> None:
        self.pushed: list[Path] = []

    def push(self, client: ServerClient, root: Path, progress: Progress) -> str:
        files = {str(p.relative_to(root)): p.read_bytes()
                 for p in sorted(root.rglob("*")) if p.is_file()}
        total = sum(map(len, files.values()))
        done = 0
        for data in files.values():
            done += len(data)
            progress("uploading", done, total)
        self.pushed.append(root)
        if isinstance(client, FakeServerClient):
            client._enter("push")
            client._leave()
            return client.add_tree(files).id
        return _tree(files).id

    def pull(self, client: ServerClient, tree: TreeInfo, dest: Path, prefix: str,
             progress: Progress) -> PulledFiles:
        assert isinstance(client, FakeServerClient)
        client._enter("pull")
        client._leave()
        prefix = prefix.strip("/")
        entries = [e for e in tree.entries
                   if not prefix or e.path == prefix or e.path.startswith(prefix + "/")]
        total = sum(e.size for e in entries)
        done = 0
        for e in entries:
            target = dest / e.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(client.blobs[e.sha256])
            done += e.size
            progress("downloading", done, total)
        return PulledFiles(len(entries), 0, total)


def demo_server(now: float = 1_700_000_000.0, *, admin: bool = True,
                name: str = "lab") -> FakeServerClient:
    """A busy fake server (8 GPUs, a dozen jobs, a foreign process) for tests, snapshots
    and trying the UI without a server."""
    fake = FakeServerClient(name, user="alice", admin=admin, gpus=8)
    fake.now = now
    for other in ("bob", "carol"):
        fake.put_user(other)
    admin, fake.admin = fake.admin, True
    fake.add_group("vision")
    fake.add_member("vision", "bob")
    fake.admin = admin
    h = 3600.0
    run = fake.add_job("cifar-resnet", state="running", gpus=[0, 1], wanted=2,
                       submitted_at=now - 2 * h, started_at=now - 1.5 * h)
    fake.add_job("bert-finetune", user="bob", state="running", gpus=[2], submitted_at=now - h,
                 started_at=now - 0.75 * h)
    fake.add_job("gan-sweep-3", user="carol", state="running", gpus=[3, 4, 5, 6],
                 wanted=4, submitted_at=now - 5 * h, started_at=now - 4 * h - 125)
    fake.add_job("llama-eval", user="bob", state="queued", wanted=4, submitted_at=now - 600,
                 reason="needs 4 GPUs, 1 free", est_start=now + 1800)
    fake.add_job("cifar-resnet-wide", state="queued", wanted=2, submitted_at=now - 300,
                 reason="behind job 4")
    done = fake.add_job("numpy-regression", state="succeeded", wanted=0,
                        submitted_at=now - 3 * h, started_at=now - 3 * h + 5,
                        ended_at=now - 3 * h + 65, exit_code=0)
    fake.add_job("mnist-mlp", user="carol", state="failed", submitted_at=now - 4 * h,
                 started_at=now - 4 * h + 3, ended_at=now - 4 * h + 40, exit_code=1,
                 message="Traceback: CUDA out of memory")
    fake.add_job("old-sweep", state="cancelled", submitted_at=now - 8 * h,
                 ended_at=now - 7 * h, message="cancelled by alice")
    fake.add_job("long-run", user="bob", state="timed_out", submitted_at=now - 30 * h,
                 started_at=now - 29 * h, ended_at=now - 27 * h)
    for i, util in ((0, 97), (1, 95), (2, 64), (3, 88), (4, 90), (5, 85), (6, 91)):
        holder = next(j for j in fake._jobs.values() if i in j.gpus)
        fake.set_gpu(i, utilization=util, memory_used=(30 + 5 * i) * GIB,
                     memory_free=(50 - 5 * i) * GIB, job=holder.id, user=holder.user)
    fake.set_gpu(7, utilization=40, memory_used=12 * GIB, memory_free=68 * GIB,
                 foreign=[ForeignProcess(pid=4242, user="dave", used_memory=12 * GIB)])
    fake.append_log(run.id, "".join(
        f"epoch {e:3d}  loss {2.3 / e:.4f}  acc {1 - 0.9 / e:.3f}\n" for e in range(1, 25)))
    fake.add_metrics(run.id, [{"step": e, "loss": round(2.3 / e, 4),
                               "acc": round(1 - 0.9 / e, 4)} for e in range(1, 25)])
    fake.append_log(done.id, "training on 3200 samples\ndone: val_acc 0.912\n")
    fake.add_metrics(done.id, [{"step": e, "loss": round(0.7 / e, 4)} for e in range(1, 41)])
    fake.set_outputs(done.id, {"weights.npz": b"\x93NUMPY" + bytes(2000),
                               "summary.json": b'{"val_acc": 0.912}',
                               "plots/loss.txt": b"0.7 0.35 0.23\n"})
    fake.now = now - 2 * 86400
    fake.add_registry_version("dataset", "cifar10", {"train.bin": bytes(3000),
                                                     "test.bin": bytes(600)},
                              description="CIFAR-10 as numpy arrays", used_by=[done.id])
    fake.now = now - 86400
    fake.add_registry_version("dataset", "cifar10", {"train.bin": bytes(2900),
                                                     "test.bin": bytes(600),
                                                     "README": b"duplicates removed\n"},
                              tag="clean", description="duplicates removed",
                              used_by=[run.id])
    fake.add_registry_version("dataset", "imdb-reviews", {"reviews.jsonl": bytes(5000)},
                              created_by="bob", shared=True,
                              description="50k movie reviews, labelled")
    fake.add_registry_version("model", "resnet18-cifar", {"weights.npz": bytes(4000)},
                              tag="best", description="val_acc 0.912")
    fake.now = now
    answer_usage(fake, UsageReport(half_life_hours=168.0, rows=[
        UsageRow(kind="user", name="carol", gpus_in_use=4, usage_gpu_hours=310.0, share=0.62,
                 standing=1.9, factor=0.27),
        UsageRow(kind="user", name="alice", gpus_in_use=2, usage_gpu_hours=120.0, share=0.24,
                 standing=0.7, factor=0.62, gpu_hours=500.0, used_gpu_hours=96.5,
                 period_days=30),
        UsageRow(kind="user", name="bob", gpus_in_use=1, usage_gpu_hours=70.0, share=0.14,
                 standing=0.4, factor=0.76, max_gpus=4),
        UsageRow(kind="group", name="vision", gpus_in_use=1, usage_gpu_hours=70.0, share=1.0,
                 standing=1.0, factor=0.5)]))
    return fake


def answer_usage(fake: FakeServerClient, report: UsageReport) -> None:
    """Make the fake answer `GET /v1/usage` with `report` (what it does not fake still
    answers 501)."""
    unfaked = fake.http

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/usage":
            return httpx.Response(200, json=report.model_dump())
        return unfaked.send(request)

    fake.http = httpx.Client(transport=httpx.MockTransport(handle), base_url="http://nai")
