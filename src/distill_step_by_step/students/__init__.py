"""The students: ``student.py`` builds, saves and loads a ``transformers`` model as a :class:`.student.Student`;
``modeling.py`` turns text into tokenised rows and batches, computes per-task losses and decodes greedily."""
