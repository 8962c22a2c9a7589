"""The training methods, one file each (fine-tuning, distillation, step-by-step, single-task): what each trains
on, its task sub-batches and loss weights, its loss and how its output is read back (``method.py`` says what a
method is; ``registry.py`` finds them all)."""
