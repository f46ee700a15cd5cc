"""`python -m nai_tui.cli`: the same as `nai`."""

import sys

from nai_tui.cli import main

sys.exit(main())
