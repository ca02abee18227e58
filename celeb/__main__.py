"""`python -m celeb` is the `celeb` command."""

import sys

from celeb.cli import main

sys.exit(main())
