"""Large files about to be sent as a job's code, said before a byte travels.

A checkpoint or a data file left in the code folder is uploaded with it: a 2 GB
upload for a job whose code is 50 KB, often by mistake. Before `nai submit` sends
anything, the folder's survey (ignore rules applied) is checked: the files that would
travel (those the hash cache does not know as sent before) over SINGLE_FILE bytes, or
over TOTAL bytes together, are named, largest first, with what to do instead (add them
to .naiignore, or push them once as a dataset or model). A person at a terminal is
asked; a script must say --yes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from nai_server.protocol import Invalid, format_size
from nai_tui.sync.scan import Survey

SINGLE_FILE = 50 << 20  # one new file over this is worth a word
TOTAL = 100 << 20  # as are new files over this together
SHOWN = 5  # files named in the warning


@dataclass(frozen=True)
class BigUpload:
    """What makes an upload big: its largest new files and the new bytes in all."""

    biggest: list[tuple[str, int]]  # (path, size), largest first
    new_bytes: int
    new_files: int

    def describe(self, folder: str) -> str:
        names = ", ".join(f"{path} ({format_size(size)})" for path, size in self.biggest)
        top = self.biggest[0][0] if self.biggest else "big.file"
        return (f"{folder} has {format_size(self.new_bytes)} to upload in {self.new_files} "
                f"new or changed file(s); the largest: {names}. If these are data or "
                f"weights rather than code, add them to .naiignore (e.g. `{top}`) and "
                f"push them once as a dataset or model (`nai dataset push NAME DIR`, then "
                f"`dataset: NAME` in nai.yaml): jobs then read them without an upload")


def big_upload(folder: Survey, *, single: int = SINGLE_FILE,
               total: int = TOTAL) -> BigUpload | None:
    """The big new files of a surveyed folder, or None when nothing is big."""
    new = [(rel, st.st_size) for rel, st in folder.unread()]
    new_bytes = sum(size for _, size in new)
    large = sorted((f for f in new if f[1] > single), key=lambda f: (-f[1], f[0]))
    if not large and new_bytes <= total:
        return None
    shown = large[:SHOWN] or sorted(new, key=lambda f: (-f[1], f[0]))[:SHOWN]
    return BigUpload(shown, new_bytes, len(new))


def confirm_big_upload(yes: bool, *, warn: Callable[[str], None],
                       interactive: Callable[[], bool] | None = None,
                       ask: Callable[[str], str] = input) -> Callable[[Survey], None]:
    """A check for `push(check=...)`: warns about a big upload, then goes on if `yes`,
    asks at a terminal, and refuses (naming --yes) in a script."""
    tty = interactive or (lambda: os.isatty(0))

    def check(folder: Survey) -> None:
        big = big_upload(folder)
        if big is None:
            return
        text = big.describe(str(folder.root))
        if yes:
            warn(f"warning: {text}")
            return
        if tty():
            warn(f"warning: {text}")
            if ask("upload them anyway? [y/N] ").strip().lower() in ("y", "yes"):
                return
            raise Invalid("nothing was uploaded: add the large files to .naiignore, or "
                          "pass --yes to upload them")
        raise Invalid(f"{text}. Nothing was uploaded; pass --yes to upload them anyway")

    return check
