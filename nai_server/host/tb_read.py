"""The helper that reads the scalars of a job's TensorBoard event files as its owner.

`python -I -m nai_server.host.tb_read ROOT...` (run by the daemon with the job's uid,
gid and groups, like output_walk) finds the `events.out.tfevents.*` files under each
ROOT, reads each from the offset the daemon gives on stdin ({"KEY": offset}, KEY being
"<root index>/<path under it>"), and prints one JSON line:

    {"points": [{"step", "time", tag: value...}], "cursors": {KEY: offset}}
    or {"error": "..."} when it cannot read event files at all

Records are the TFRecord frames TensorBoard writes (length, its checksum, the Event,
its checksum; both checksums checked with TensorBoard's own crc); each Event is decoded
by TensorBoard's protobuf classes, so nothing here parses protobuf by hand. A record
not yet complete stops the file's reading until the next run. Every read is bounded.
Standard library and `tensorboard` only (the `nothingai[tensorboard]` extra).
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import sys
from typing import Any

PREFIX = "events.out.tfevents."
MAX_FILES = 64
MAX_DEPTH = 6
MAX_BYTES = 8 << 20  # read in one run, over all files
MAX_RECORD = 4 << 20  # one Event
MAX_POINTS = 5000
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DT_FLOAT, _DT_DOUBLE = 1, 2


def event_files(roots: list[str]) -> list[tuple[str, str]]:
    """(key, path) of the event files under the roots, in name order (no link is
    followed below a root)."""
    found: list[tuple[str, str]] = []

    def walk(index: int, path: str, rel: str, depth: int) -> None:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if len(found) >= MAX_FILES:
                return
            sub = f"{rel}{entry.name}"
            if entry.is_dir(follow_symlinks=False) and depth < MAX_DEPTH:
                walk(index, entry.path, sub + "/", depth + 1)
            elif entry.name.startswith(PREFIX) and entry.is_file(follow_symlinks=False):
                found.append((f"{index}/{sub}", entry.path))

    for index, root in enumerate(roots):
        walk(index, root, "", 0)
    return found


def scalars(event: Any) -> dict[str, float]:
    """The scalar values of one Event: `simple_value` (PyTorch's SummaryWriter, TF1)
    or a scalar tensor of the scalars plugin (TF2, Keras)."""
    values: dict[str, float] = {}
    for value in event.summary.value:
        number: float | None = None
        single = True  # a float32: 7 digits of it mean something, the rest is noise
        if value.HasField("simple_value"):
            number = value.simple_value
        elif value.HasField("tensor"):
            tensor = value.tensor
            if tensor.float_val:
                number = tensor.float_val[0]
            elif tensor.double_val:
                number, single = tensor.double_val[0], False
            elif tensor.dtype == _DT_FLOAT and len(tensor.tensor_content) == 4:
                number = struct.unpack("<f", tensor.tensor_content)[0]
            elif tensor.dtype == _DT_DOUBLE and len(tensor.tensor_content) == 8:
                number, single = struct.unpack("<d", tensor.tensor_content)[0], False
        if number is not None and math.isfinite(number):
            values[value.tag] = float(f"{number:.7g}") if single else float(number)
    return values


def run_prefixes(keys: list[str]) -> dict[str, str]:
    """What goes before each file's tags: its folder below the folder common to all
    (so "acc_train/acc" and "acc_val/acc" from SummaryWriter.add_scalars, and
    "exp1/loss" and "exp2/loss" for two runs, stay apart; one run's tags stay as
    they are)."""
    below = {key: key.split("/", 1)[1] for key in keys}  # without the root's index
    folders = {key: rel.rsplit("/", 1)[0] if "/" in rel else "" for key, rel in below.items()}
    if not folders:
        return {}
    common = os.path.commonpath(list(folders.values()))
    return {key: "" if folder == common else folder[len(common) + 1:] + "/"
            for key, folder in folders.items()}


def main(argv: list[str]) -> int:
    try:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    except ImportError:
        print(json.dumps({"error": "the server cannot read TensorBoard files: install "
                                   "nothingai[tensorboard] (the tensorboard package)"}))
        return 0
    try:
        given = json.loads(sys.stdin.read(1 << 20) or "{}")
    except ValueError:
        given = {}
    cursors = {k: v for k, v in given.items() if isinstance(v, int) and v >= 0} \
        if isinstance(given, dict) else {}
    points: list[dict[str, Any]] = []
    done: dict[str, int] = {}
    budget = MAX_BYTES
    files = event_files(argv)
    prefixes = run_prefixes([key for key, _ in files])
    for key, path in files:
        offset = cursors.get(key, 0)
        try:
            fd = os.open(path, _FLAGS)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            while budget > 0 and len(points) < MAX_POINTS:
                head = os.pread(fd, 12, offset)
                if len(head) < 12:
                    break
                if struct.unpack("<I", head[8:])[0] != masked_crc32c(head[:8]):
                    break  # not a record (or a damaged one): read no further
                length = struct.unpack("<Q", head[:8])[0]
                if length > MAX_RECORD:
                    break
                body = os.pread(fd, length + 4, offset + 12)
                if len(body) < length + 4:
                    break  # still being written
                data = body[:length]
                if struct.unpack("<I", body[length:])[0] != masked_crc32c(data):
                    break
                offset += 12 + length + 4
                budget -= 12 + length + 4
                event = event_pb2.Event.FromString(data)
                values = {prefixes[key] + tag: v for tag, v in scalars(event).items()}
                if values:
                    points.append({"step": int(event.step), "time": round(event.wall_time, 3),
                                   **values})
        except Exception:  # a file that is not what its name says: skip it
            pass
        finally:
            os.close(fd)
        done[key] = offset
    print(json.dumps({"points": points, "cursors": done}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
