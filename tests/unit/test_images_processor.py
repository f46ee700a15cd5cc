"""The `images` dataset processor (plugins/images), called as a processing job calls
it: images resized to fit, converted, written anew without their metadata and turned
upright, the folder layout kept, other files copied, and an unreadable image skipped
and named in the report while the rest goes on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from nai_plugins import images


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "big").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90° clockwise to view
    exif[0x010F] = "SecretCam"  # make
    Image.new("RGB", (40, 20), (200, 10, 10)).save(root / "cats" / "a.jpg", exif=exif)
    Image.new("RGBA", (30, 30), (0, 0, 255, 128)).save(root / "dogs" / "b.png")
    Image.new("L", (8, 8), 128).save(root / "dogs" / "big" / "c.bmp")
    (root / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "dogs" / "notes.txt").write_text("good dogs\n")
    return root


def test_resize_convert_strip_and_report(source: Path, tmp_path: Path) -> None:
    before = digests(source)
    target = tmp_path / "out"
    target.mkdir()
    report = images.nai_process_dataset(source=source, target=target,
                                        options={"size": "16", "format": "webp"})
    assert digests(source) == before  # the input is only read
    assert sorted(digests(target)) == ["cats/a.webp", "dogs/b.webp", "dogs/big/c.webp",
                                       "dogs/notes.txt"]
    assert (report["converted"], report["copied"], report["skipped"]) == (3, 1, 1)
    (bad,) = report["unreadable"]
    assert bad["path"] == "cats/broken.png" and "cannot identify" in bad["error"]
    with Image.open(target / "cats" / "a.webp") as a:
        # Turned upright (20×40), then fitted in 16×16; no EXIF left (no camera name).
        assert a.format == "WEBP" and a.size == (8, 16)
        assert not a.getexif() and "exif" not in a.info
    with Image.open(target / "dogs" / "big" / "c.webp") as c:
        assert c.size == (8, 8)  # smaller than the box: left as it is
    assert (target / "dogs" / "notes.txt").read_text() == "good dogs\n"


def test_jpeg_drops_transparency_and_others_can_be_dropped(source: Path,
                                                           tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    report = images.nai_process_dataset(source=source, target=target, options={
        "format": "jpg", "quality": "70", "others": "drop"})
    assert report["copied"] == 0 and not (target / "dogs" / "notes.txt").exists()
    with Image.open(target / "dogs" / "b.jpg") as b:
        assert b.format == "JPEG" and b.mode == "RGB" and b.size == (30, 30)


def test_without_format_each_keeps_its_own_and_clashes_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    Image.new("RGB", (4, 4)).save(root / "x.png")
    Image.new("RGB", (4, 4)).save(root / "x.jpg")
    kept = tmp_path / "kept"
    kept.mkdir()
    images.nai_process_dataset(source=root, target=kept, options={})
    assert sorted(digests(kept)) == ["x.jpg", "x.png"]
    one = tmp_path / "one"
    one.mkdir()
    report = images.nai_process_dataset(source=root, target=one, options={"format": "png"})
    assert sorted(digests(one)) == ["x.png"] and report["skipped"] == 1
    assert "already became x.png" in report["unreadable"][0]["error"]


@pytest.mark.parametrize("options", [{"size": "big"}, {"size": "0x10"}, {"format": "heic"},
                                     {"quality": "100"}, {"others": "keep"}])
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        images.nai_process_dataset(source=tmp_path, target=tmp_path, options=options)


@pytest.mark.parametrize("suffix", [".tif", ".jpg", ".png"])
def test_no_metadata_survives_in_the_same_format(tmp_path: Path, suffix: str) -> None:
    root, target = tmp_path / "src", tmp_path / "out"
    root.mkdir()
    target.mkdir()
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    Image.new("RGB", (6, 6), (1, 2, 3)).save(root / f"x{suffix}", exif=exif)
    with Image.open(root / f"x{suffix}") as original:
        assert original.getexif().get(0x010F) == "SecretCam"
    report = images.nai_process_dataset(source=root, target=target, options={})
    assert report["converted"] == 1, report
    with Image.open(target / f"x{suffix}") as made:  # (a TIFF's own layout tags stay)
        assert 0x010F not in made.getexif() and "exif" not in made.info
