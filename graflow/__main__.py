"""``python -m graflow``: the graflow command."""

import sys

from graflow.cli import main

sys.exit(main())
