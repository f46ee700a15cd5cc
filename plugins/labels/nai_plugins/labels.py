"""`labels`: an annotator for classification (`nai dataset annotate photos --with labels
-o classes=cat,dog`). A web page shows the dataset's files one at a time (text inline,
images as pictures) with a button per class; number keys pick a class, the arrow keys
move, and the page shows how many are labelled. Every label is appended to
`labels.jsonl` in the new version the moment it is made, with who made it, so several
people can label at once and the last label of an item is its label.

Options (all strings, from `-o key=value` over the admin's `plugins.labels.options`;
`OPTIONS` says them in short, and the session refuses any other key, naming these):
    classes  the classes, separated by commas (required): "cat,dog"
    keep     "files" (default): the new version holds the input's files as well as
             labels.jsonl; "labels": labels.jsonl alone (e.g. `--to photos-labels`)
A labels.jsonl already in the input version is carried over, so labelling goes on
where the last session stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from nai_server.plugins.contracts import LABELS_FILE, USER_HEADER, hookimpl

IMAGES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".svg")
MAX_CLASSES = 9  # one number key each
OPTIONS = {
    "classes": "the classes, comma-separated, 1 to 9 of them (required), e.g. cat,dog",
    "keep": "files: the new version holds the input's files and labels.jsonl; labels: "
            "labels.jsonl alone (default files)",
}


def classes_of(options: Mapping[str, str]) -> list[str]:
    classes = [c.strip() for c in options.get("classes", "").split(",") if c.strip()]
    if not classes:
        raise ValueError("classes: give the classes, e.g. -o classes=cat,dog")
    if len(classes) > MAX_CLASSES or len(set(classes)) != len(classes):
        raise ValueError(f"classes: 1 to {MAX_CLASSES} distinct names, got {classes}")
    return classes


def items_of(source: Path) -> list[str]:
    """The files to label: every plain file of the input but its labels."""
    return sorted(str(p.relative_to(source)) for p in source.rglob("*")
                  if p.is_file() and not p.is_symlink() and p.name != LABELS_FILE)


class Labels:
    """The labels so far (the last of each item), kept in memory and in the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.latest: dict[str, str] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self.latest[str(row["item"])] = str(row["label"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a crash

    def add(self, item: str, label: str, by: str) -> None:
        line = json.dumps({"item": item, "label": label, "by": by, "at": time.time()})
        with self.lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
            self.latest[item] = label


def prepare(source: Path, target: Path, keep: str) -> None:
    """The new version's files other than the labels made now (once: a replica that runs
    again finds them there)."""
    old = source / LABELS_FILE
    if old.is_file() and not (target / LABELS_FILE).exists():
        shutil.copyfile(old, target / LABELS_FILE)
    if keep == "labels":
        return
    for rel in items_of(source):
        out = target / rel
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, out)


def make_app(source: Path, target: Path, options: Mapping[str, str]) -> Starlette:
    classes = classes_of(options)
    keep = options.get("keep", "files")
    if keep not in ("files", "labels"):
        raise ValueError(f"keep: files or labels, got {keep!r}")
    prepare(source, target, keep)
    items = items_of(source)
    known = set(items)
    labels = Labels(target / LABELS_FILE)

    def state() -> dict[str, Any]:
        return {"items": items, "classes": classes, "labels": dict(labels.latest),
                "labelled": sum(1 for i in items if i in labels.latest), "total": len(items)}

    async def page(_: Request) -> Response:
        return HTMLResponse(PAGE)

    async def listing(_: Request) -> Response:
        return JSONResponse(state())

    async def file(request: Request) -> Response:
        rel = request.path_params["path"]
        if rel not in known:  # only the listed files: no way out of the dataset
            return JSONResponse({"error": f"no item {rel!r}"}, status_code=404)
        return FileResponse(source / rel)

    async def label(request: Request) -> Response:
        try:
            body = await request.json()
            item, chosen = str(body["item"]), str(body["label"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send {"item": PATH, "label": CLASS}'},
                                status_code=400)
        if item not in known or chosen not in classes:
            return JSONResponse({"error": f"unknown item or class (classes: {classes})"},
                                status_code=400)
        labels.add(item, chosen, request.headers.get(USER_HEADER, ""))
        return JSONResponse(state())

    return Starlette(routes=[
        Route("/", page), Route("/items", listing), Route("/label", label, methods=["POST"]),
        Route("/file/{path:path}", file)])


@hookimpl
def nai_plugin_options() -> Mapping[str, str]:
    """The options above: the session refuses any other key before the app starts."""
    return OPTIONS


@hookimpl
def nai_annotator_app(source: Path, target: Path, options: Mapping[str, str]) -> Any:
    return make_app(source, target, options)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>nai labels</title>
<style>
body{font-family:sans-serif;margin:1em auto;max-width:60em}
#item{min-height:20em;border:1px solid #ccc;padding:1em;white-space:pre-wrap}
#item img{max-width:100%;max-height:30em}
button{font-size:1.1em;margin:.3em}
button.on{background:#4a4;color:#fff}
progress{width:100%}
</style></head><body>
<div><span id="where"></span> &middot; <span id="count"></span>
<progress id="bar" value="0" max="1"></progress></div>
<h3 id="name"></h3><div id="item"></div>
<div id="classes"></div>
<p>Keys: 1&ndash;9 pick a class (and go on), &larr; &rarr; move,
the next unlabelled item: n. <button id="finish">Finish and save</button></p>
<script>
let s = null, at = 0;
const IMG = __IMAGES__;
const enc = p => p.split("/").map(encodeURIComponent).join("/");
async function load() {
  s = await (await fetch("items")).json();
  const next = s.items.findIndex(i => !(i in s.labels));
  at = next < 0 ? 0 : next; show();
}
function show() {
  const b = document.getElementById("bar");
  b.max = Math.max(1, s.total); b.value = s.labelled;
  document.getElementById("count").textContent = s.labelled + " / " + s.total + " labelled";
  if (!s.items.length) { document.getElementById("item").textContent = "no files"; return; }
  const item = s.items[at];
  document.getElementById("where").textContent = (at + 1) + " of " + s.total;
  document.getElementById("name").textContent = item;
  const box = document.getElementById("item");
  box.textContent = "";
  if (IMG.some(e => item.toLowerCase().endsWith(e))) {
    const img = document.createElement("img"); img.src = "file/" + enc(item); box.append(img);
  } else {
    fetch("file/" + enc(item)).then(r => r.text()).then(t => {
      if (s.items[at] === item) box.textContent = t.slice(0, 20000); });
  }
  const cs = document.getElementById("classes"); cs.textContent = "";
  s.classes.forEach((c, n) => {
    const btn = document.createElement("button");
    btn.textContent = (n + 1) + " " + c;
    if (s.labels[item] === c) btn.className = "on";
    btn.onclick = () => pick(c); cs.append(btn);
  });
}
async function pick(c) {
  const r = await fetch("label", {method: "POST", headers: {"content-type": "application/json"},
                        body: JSON.stringify({item: s.items[at], label: c})});
  if (r.ok) { s = await r.json(); at = Math.min(at + 1, s.items.length - 1); show(); }
}
document.getElementById("finish").onclick = async () => {
  if (!confirm("End the session and save the labels as a new version?")) return;
  await fetch("_nai/finish", {method: "POST"});
  document.body.textContent = "Saved: the labels become the dataset's next version.";
};
document.addEventListener("keydown", e => {
  if (!s) return;
  const n = parseInt(e.key, 10);
  if (n >= 1 && n <= s.classes.length) pick(s.classes[n - 1]);
  else if (e.key === "ArrowRight") { at = Math.min(at + 1, s.items.length - 1); show(); }
  else if (e.key === "ArrowLeft") { at = Math.max(at - 1, 0); show(); }
  else if (e.key === "n") {
    const next = s.items.findIndex(i => !(i in s.labels)); if (next >= 0) { at = next; show(); }
  }
});
load();
</script></body></html>
""".replace("__IMAGES__", json.dumps(list(IMAGES)))
