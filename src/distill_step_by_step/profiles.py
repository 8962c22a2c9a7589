"""``python -m distill_step_by_step.profiles``: the command line of :mod:`.ops.profiles`, under the name people type."""

from .ops.profiles import main

if __name__ == "__main__":
    main()
