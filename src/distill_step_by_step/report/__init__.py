"""The ``report`` stage: tables, paired comparisons and verdicts on the paper's claims, and plots
(``report.py``), with the bootstrap intervals they rest on (``intervals.py``). Reads only what other stages wrote."""
