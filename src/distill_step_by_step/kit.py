"""``python -m distill_step_by_step.kit``: the command line of :mod:`.ops.kit`, under the name people type."""

import sys

from .ops.kit import main

if __name__ == "__main__":
    sys.exit(main())
