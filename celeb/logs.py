"""The library's log lines (e.g. where a loader put its data), shown by the entry points that want them.

Modules log to `logging.getLogger(__name__)` under "celeb" and never configure logging themselves
(no side effects on import); `show()` is called by the CLI and by a Ray trial to print them.
"""

from __future__ import annotations

import logging
import sys

_HANDLER_NAME = "celeb-stderr"


def show(level: int = logging.INFO) -> None:
    """Print the "celeb" loggers' lines at `level` and above on stderr (once, however often called)."""
    logger = logging.getLogger("celeb")
    logger.setLevel(level)
    if not any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
