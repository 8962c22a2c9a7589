"""Standard distillation: input -> the teacher's label (the unlabeled setting; rows whose teacher label did not
parse are dropped and counted)."""

from .method import Method
from .registry import register


class Distill(Method):
    name, fixed = "distill", {"labels": "teacher"}


register(Distill())
