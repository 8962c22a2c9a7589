"""Standard fine-tuning: input -> gold label (the base :class:`Method`'s behaviour)."""

from .method import Method
from .registry import register


class FineTune(Method):
    name, fixed = "finetune", {"labels": "gold"}


register(FineTune())
