"""What the ``graflow`` command needs around a run: locks, progress, logs, reports, metrics.

Exit codes of every command (``graflow.cli`` maps errors to them)::

    0 success   1 the workflow failed   2 usage or configuration error
    3 another run holds the --lock      4 Redis unavailable
    128+N stopped by signal N (130 Ctrl-C / SIGINT, 143 SIGTERM)
"""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_LOCKED: Final = 3
EXIT_UNAVAILABLE: Final = 4
EXIT_INTERRUPTED: Final = 130
