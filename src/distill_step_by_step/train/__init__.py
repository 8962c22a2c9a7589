"""Training and using a student for one grid cell.

``cell.py`` names a cell and where its files live; ``training.py`` is the training loop (``resume.py`` its
resumable state on disk); ``inference.py`` labels and scores with a trained student; ``train_score.py`` is the
``train_score`` stage (train, then score); ``predict.py`` is ``distill-predict``; ``runlog.py`` is what a run
measured about itself (times, host); ``syncs.py`` counts host-device waits for tests and benchmarks.
"""
