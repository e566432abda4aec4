"""`python -m videocfr ...` is the `videocfr` command."""

import sys

from videocfr.cli import main

sys.exit(main())
