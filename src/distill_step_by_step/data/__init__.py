"""The data: the authors' archive, the datasets, and everything the stages derive from them before training.

``archive.py`` reads the authors' ``datasets.zip``; ``datasets.py`` holds each dataset's spec (its rows, its
model input, how a teacher's completion is parsed and an answer scored); ``parsing.py`` and ``scoring.py`` are
those rules (``arith.py`` evaluates SVAMP equations); ``prepare.py`` is the ``prepare`` stage, ``corpus.py``
the rationale corpora a teacher's completions become, ``splits.py`` the ``split`` stage's id manifests.
"""
