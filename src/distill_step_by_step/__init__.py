"""Distilling step-by-step (Hsieh et al., 2023) as a reproducible DVC pipeline.

The package holds all logic; the scripts in ``stages/`` only parse arguments and call it.
"""

__version__ = "0.1.0"
