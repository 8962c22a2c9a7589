"""The ``report`` stage (``report.py``: tables, paired comparisons, verdicts on the paper's claims, the Markdown,
DVC's summary metrics), what it reads (``reading.py``), its plots (``plots.py``), the bootstrap intervals its
comparisons rest on (``intervals.py``) and how methods and datasets are named and drawn (``presentation.py``).
It reads only what other stages wrote."""
