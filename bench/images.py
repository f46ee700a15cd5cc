"""Processing small images with the `images` plugin through nai vs the same Pillow loop
run directly (issue 19's target: a ratio of at most 1.2).

Through nai: an in-process service on fake GPUs with `images` installed (as pip would:
a distribution's entry point) and enabled; the images are uploaded as dataset
`photos` (not timed), then `POST /v1/datasets/photos/process` is timed until the job
has succeeded and its output is the next version: scheduling, the job's process, its
read-only input, the plugin, collecting the output into the blob store, registering.
The service is stepped every 10 ms meanwhile, and its end looked for in the service
(not through the API, whose polling would take CPU from the job on a small machine).
Directly: a loop of Pillow calls doing the same to the same files in a folder
(open, turn upright, shrink to fit, save as WebP), in this process. Rounds alternate,
and each round saves at a quality of its own (80, 81, ...), on both sides: its outputs
are new to the store, as a first run's are, not the last round's bytes found again.

    .venv/bin/python bench/images.py [--images 10000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.config import PluginConfig
from nai_server.plugins import PluginRegistry
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import AsPeer, make_service, tick_until, upload_tree
from nai_server.testing.plugin_dist import write_dist

OPTIONS = {"size": "32", "format": "webp"}  # and a quality per round


def photos(count: int) -> dict[str, bytes]:
    """`count` small JPEGs (64×48, with EXIF) in ten class folders."""
    exif = Image.Exif()
    exif[0x010F] = "BenchCam"
    made = {}
    for i in range(count):
        out = io.BytesIO()
        Image.new("RGB", (64, 48), (i % 251, (i * 7) % 253, (i * 13) % 255)).save(
            out, format="JPEG", quality=85, exif=exif)
        made[f"class{i % 10}/{i:05}.jpg"] = out.getvalue()
    return made


def direct(source: Path, target: Path, quality: int) -> float:
    started = time.perf_counter()
    for path in sorted(source.rglob("*.jpg")):
        out = target / path.relative_to(source).with_suffix(".webp")
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened) or opened
            image.thumbnail((32, 32), Image.Resampling.LANCZOS)
            image.save(out, format="WEBP", quality=quality)
    return time.perf_counter() - started


def through_nai(service: Any, http: TestClient, rounds_done: int) -> float:
    started = time.perf_counter()
    made = http.post("/v1/datasets/photos/process",
                     json={"plugin": "images", "version": "1",
                           "options": {**OPTIONS, "quality": str(80 + rounds_done)},
                           "to": f"small{rounds_done}"})
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]

    # Its end is looked for in the service itself, every 10 ms: through the API, 100
    # requests a second took a fifth of one of this machine's two cores from the job.
    tick_until(service, lambda: service.jobs.ended(job_id), timeout=900, what=f"job {job_id}")
    took = time.perf_counter() - started
    info = http.get(f"/v1/jobs/{job_id}").json()
    assert info["state"] in TERMINAL_STATES, info
    log = http.get(f"/v1/jobs/{job_id}/logs").text
    assert info["state"] == "succeeded", log[-2000:]
    print("  " + "".join(line for line in log.splitlines() if " done in " in line))
    print(f"  nai round {rounds_done}: queued {info['started_at'] - info['submitted_at']:.2f} s,"
          f" ran and collected {info['ended_at'] - info['started_at']:.2f} s, total "
          f"{took:.2f} s", flush=True)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    files = photos(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        site = write_dist(root / "site", "nai-plugin-images", "0.1.0", {},
                          {"nai.dataset_processors": {"images": "nai_plugins.images"}})
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), *sys.path])  # the job's
        source = root / "src"
        for rel, data in files.items():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            (source / rel).write_bytes(data)
        service = make_service(root / "state", plugins=PluginRegistry.discover(
            {"images": PluginConfig()}))
        times: dict[str, list[float]] = {"nai": [], "direct": []}
        try:
            with TestClient(AsPeer(create_app(service)), base_url="http://nai") as http:
                tree = upload_tree(http, files)
                made = http.post("/v1/datasets", json={"name": "photos", "tree_id": tree})
                assert made.status_code == 201, made.text
                for n in range(args.rounds):
                    times["direct"].append(direct(source, root / f"direct{n}", 80 + n))
                    times["nai"].append(through_nai(service, http, n))
        finally:
            service.close()
    nai, plain = (statistics.median(times[k]) for k in ("nai", "direct"))
    print(f"{args.images} images ({OPTIONS}), median of {args.rounds} rounds each:")
    print(f"  through nai (submit → new version)  {nai:8.2f} s   {times['nai']}")
    print(f"  the Pillow loop directly            {plain:8.2f} s   {times['direct']}")
    print(f"  ratio                               {nai / plain:8.2f}  (target ≤ 1.2)")


if __name__ == "__main__":
    main()
