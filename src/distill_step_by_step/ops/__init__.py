"""Operations: running the pipeline at scale, apart from the science it runs.

``profiles.py`` runs named sets of overrides as DVC experiments; ``grid.py`` builds a profile's grid as its own
pipeline with many workers; ``remotes.py`` moves a grid's cells between clones, the shared remote and the
``store``; ``kit.py`` packs and runs workers on a lent GPU machine; ``gpu.py`` gives queued jobs GPU slots.
"""
