"""`python -m nai_server.cli`: the same as `nai-server`."""

import sys

from nai_server.cli import main

sys.exit(main())
