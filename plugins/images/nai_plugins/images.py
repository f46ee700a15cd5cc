"""`images`: a dataset processor that resizes images, converts their format and strips
their metadata (EXIF, GPS, comments) with Pillow, keeping the folder layout
(`nai dataset process photos --with images -o size=256 -o format=webp`).

Options (all strings, from `-o key=value` over the admin's `plugins.images.options`;
`OPTIONS` says them in short, and the job refuses any other key, naming these):
    size     the largest an image may be: "256" (a 256×256 box) or "320x240"; a larger
             image shrinks to fit, keeping its aspect; none: no resizing (the default)
    format   the images' new format: jpeg, png, webp, bmp, gif or tiff (the file's
             extension follows); none: each keeps its own (the default)
    quality  for jpeg and webp, 1–95, "90" by default
    others   what becomes of files that are not images by their extension: "copy"
             (the default: as they are, at their path) or "drop"
Every image is decoded and written anew, so no metadata survives; an image whose EXIF
says it is rotated is turned upright first. An image that cannot be read is skipped
and named in the report with why; the job still succeeds.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from nai_server.plugins.contracts import hookimpl

SUFFIXES = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp", ".bmp": "bmp",
            ".gif": "gif", ".tif": "tiff", ".tiff": "tiff"}
EXTENSION = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp", "gif": ".gif",
             "tiff": ".tif"}
NO_ALPHA = {"jpeg", "bmp"}  # formats that cannot keep transparency
OPTIONS = {
    "size": "the largest an image may be: 256 (a box) or 320x240; larger ones shrink to "
            "fit, keeping their aspect (default: no resizing)",
    "format": "the new format: jpeg, png, webp, bmp, gif or tiff (default: each keeps "
              "its own)",
    "quality": "for jpeg and webp, 1 to 95 (default 90)",
    "others": "files that are not images: copy (as they are) or drop (default copy)",
}
MAX_LISTED = 1000  # skipped images named in the report (the count is always exact)


def _size(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    width, _, height = text.lower().partition("x")
    try:
        box = (int(width), int(height or width))
    except ValueError:
        raise ValueError(f"size: a number or WIDTHxHEIGHT, e.g. 256 or 320x240; got "
                         f"{text!r}") from None
    if min(box) < 1:
        raise ValueError(f"size: both sides at least 1 pixel, got {text!r}")
    return box


def _options(options: Mapping[str, str]) -> tuple[tuple[int, int] | None, str, int, str]:
    size = _size(options.get("size", "").strip())
    fmt = options.get("format", "").strip().lower()
    fmt = {"jpg": "jpeg", "tif": "tiff"}.get(fmt, fmt)
    if fmt and fmt not in EXTENSION:
        raise ValueError(f"format: one of {', '.join(EXTENSION)}, got {fmt!r}")
    try:
        quality = int(options.get("quality", "90"))
    except ValueError:
        quality = 0
    if not 1 <= quality <= 95:
        raise ValueError(f"quality: 1 to 95, got {options.get('quality')!r}")
    others = options.get("others", "copy")
    if others not in ("copy", "drop"):
        raise ValueError(f"others: copy or drop, got {others!r}")
    return size, fmt, quality, others


def convert(source: Path, target: Path, fmt: str, size: tuple[int, int] | None,
            quality: int) -> None:
    """Write `source` anew at `target` in `fmt`: upright, fitted in `size`, no metadata."""
    with Image.open(source) as opened:
        image = ImageOps.exif_transpose(opened) or opened
        image.load()
        if size is not None and (image.width > size[0] or image.height > size[1]):
            image.thumbnail(size, Image.Resampling.LANCZOS)
        if fmt in NO_ALPHA and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        elif image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1", "I", "I;16", "F"):
            image = image.convert("RGBA")
        # Nothing of the original's metadata goes along (a palette's transparency is
        # part of the picture).
        image.info = {k: v for k, v in image.info.items() if k == "transparency"}
        params: dict[str, Any] = {"quality": quality} if fmt in ("jpeg", "webp") else {}
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, format=fmt.upper(), **params)


def process(source: Path, target: Path, options: Mapping[str, str]) -> dict[str, Any]:
    size, fmt, quality, others = _options(options)
    converted = copied = 0
    skipped: list[dict[str, str]] = []
    skipped_count = 0
    made: set[Path] = set()
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(source)
        own = SUFFIXES.get(path.suffix.lower())
        if own is None:
            if others == "copy":
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target / rel)
                copied += 1
            continue
        new = fmt or own
        out = target / rel.with_suffix(EXTENSION[new] if fmt else path.suffix)
        why = None
        if out in made:  # a.png and a.jpg, both now a.webp: the first one wins
            why = f"another image already became {out.relative_to(target)}"
        else:
            try:
                convert(path, out, new, size, quality)
            except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
                out.unlink(missing_ok=True)
                why = f"{type(exc).__name__}: {exc}"
        if why is not None:
            skipped_count += 1
            if len(skipped) < MAX_LISTED:
                skipped.append({"path": str(rel), "error": why})
            continue
        made.add(out)
        converted += 1
    return {"converted": converted, "copied": copied, "skipped": skipped_count,
            "unreadable": skipped, **({"format": fmt} if fmt else {}),
            **({"size": f"{size[0]}x{size[1]}"} if size else {})}


@hookimpl
def nai_plugin_options() -> Mapping[str, str]:
    """The options above: the job refuses any other key before any image is read."""
    return OPTIONS


@hookimpl
def nai_process_dataset(source: Path, target: Path,
                        options: Mapping[str, str]) -> Mapping[str, Any]:
    return process(source, target, options)
