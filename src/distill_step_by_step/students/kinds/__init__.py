"""The student kinds, one file each (``students/kind.py`` says what a kind is)."""
