"""`nai`: the client's entry point."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print("nai: the client arrives with the batch CLI; for now use nai-server and nai-admin",
          file=sys.stderr)
    del args
    return 2


if __name__ == "__main__":
    sys.exit(main())
