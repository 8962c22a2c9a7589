"""``python -m distill_step_by_step.grid``: the command line of :mod:`.ops.grid`, under the name people type."""

import sys

from .ops.grid import main

if __name__ == "__main__":
    sys.exit(main())
