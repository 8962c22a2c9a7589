"""The training methods of the paper (fine-tuning, distillation, step-by-step, single-task), one registry in
``registry.py``: what each trains on, its task sub-batches and loss weights, how its output is read back."""
