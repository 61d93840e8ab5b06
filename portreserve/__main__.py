"""`python3 -m portreserve`: the portreserve command (cli.main)."""

import sys

from .cli import main

sys.exit(main())
