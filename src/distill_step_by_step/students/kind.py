"""What a student kind is: how a model of that kind is built from its ``students.<name>`` entry and loaded from a
checkpoint, how its text is laid out (prompt and target), how a batch is collated and its task losses
computed, and how its generated ids are read. Each kind is one file of ``kinds/`` (named like the kind, ``-`` as
``_``) that subclasses :class:`StudentKind` and registers an instance; the registry imports them all when first
read. Here too: what a kind makes (a tokenised :class:`Row`, a :class:`Batch`) and the loss at a batch's target
positions; padding and the rest of the shared machinery are ``modeling.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from ..plugins import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Student = Any  # student.py's Student (which imports this module: named, not imported)
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits at the target positions, target ids) -> loss


@dataclass
class Row:
    """One tokenised (source, target) pair; ``target`` ends with EOS."""

    source: list[int]
    target: list[int]

    def __len__(self) -> int:
        return len(self.source) + len(self.target)


@dataclass
class Batch:
    """Padded model inputs on the device, and which output positions predict which target tokens.

    ``target_index`` indexes the flattened (batch x time) outputs whose next token is a target token,
    ``target_ids`` holds those tokens: the loss is their token-mean cross-entropy.
    """

    input_ids: torch.Tensor | None  # None where the encoder's outputs are passed instead
    attention_mask: torch.Tensor | None
    target_index: torch.Tensor
    target_ids: torch.Tensor
    decoder_input_ids: torch.Tensor | None = None  # sequence-to-sequence students only

    def inputs(self) -> dict[str, torch.Tensor | None]:
        """The model's keyword inputs."""
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.decoder_input_ids is not None:
            inputs["decoder_input_ids"] = self.decoder_input_ids
        return inputs

    @property
    def output_shape(self) -> tuple[int, int]:
        """(batch, time) of the outputs that go through the vocabulary head."""
        ids = self.decoder_input_ids if self.decoder_input_ids is not None else self.input_ids
        return ids.shape[0], ids.shape[1]


@contextmanager
def _head_only_at(model: torch.nn.Module, batch: Batch, vocab: torch.Tensor | None) -> Iterator[bool]:
    """While active, the output projection runs only at the batch's target positions, and (with ``vocab``)
    onto those tokens only.

    The vocabulary projection is the largest matmul of a small student's step (MiniLM: 384 x 30522 per
    target token, more than a decoder layer), and padding positions are thrown away by the loss anyway:
    projecting only the real target tokens gives the same loss for less compute and logits memory. A
    restricted output vocabulary (``train.output_vocabulary: seen``) projects onto its rows of the same
    weights: a softmax over those tokens alone, a different (smaller) output layer, not the same loss. The
    model's own forward is kept (the head module's forward is swapped while active), so it works for any
    architecture whose head is ``get_output_embeddings()``; yields False (and changes nothing) where there is none.
    """
    core = getattr(model, "module", model)  # DDP wrapper
    head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear):
        yield False
        return
    shape = batch.output_shape

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        if tuple(hidden.shape[:2]) == shape:
            hidden = hidden.flatten(0, 1).index_select(0, batch.target_index)
        if vocab is None:
            return F.linear(hidden, head.weight, head.bias)
        bias = None if head.bias is None else head.bias.index_select(0, vocab)
        return F.linear(hidden, head.weight.index_select(0, vocab), bias)

    head.forward = forward
    try:
        yield True
    finally:
        del head.forward


def logits_at_targets(model: torch.nn.Module, batch: Batch, vocab: torch.Tensor | None,
                       **inputs: torch.Tensor | None) -> torch.Tensor:
    """The logits of the target positions only (batch.target_index order), over ``vocab`` when given."""
    with _head_only_at(model, batch, vocab) as selected:
        logits = model(**inputs).logits
    if selected:
        return logits
    logits = logits.flatten(0, 1).index_select(0, batch.target_index)
    return logits if vocab is None else logits.index_select(1, vocab)


def token_loss(model: torch.nn.Module, batch: Batch, loss: Loss, vocab: torch.Tensor | None = None) -> torch.Tensor:
    """The method's ``loss`` of the batch's logits at its target tokens (over the restricted ``vocab`` when
    given, the batch's targets then being rows of it)."""
    return loss(logits_at_targets(model, batch, vocab, **batch.inputs()), batch.target_ids)


KINDS_PACKAGE = f"{__package__}.kinds"


class StudentKind:
    """A kind of student. Subclasses say how to build, load, lay out, collate, compute losses and decode."""

    name: ClassVar[str]
    left_padding: ClassVar[bool] = False  # prompts are left-padded for generation (decoder-only models)
    lora_task: ClassVar[str | None] = None  # peft's task type for LoRA adapters (None: the kind takes none)

    def build(self, cfg: Any) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase", frozenset[str]]:
        """A model and tokenizer from a checked ``students.<name>`` entry, and the names of the parameters that
        start from nothing pretrained."""
        raise NotImplementedError

    def load(self, path: str) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
        """A trained checkpoint's model and tokenizer."""
        raise NotImplementedError

    def finish(self, model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase") -> None:
        """What the kind sets on a built or loaded model (a decoder's start token; padding side)."""

    def source_text(self, text: str) -> str:
        """How a source is written for the model (a decoder-only student's prompt)."""
        return text

    def target_text(self, text: str) -> str:
        """How a target is written for the model."""
        return text

    def collate(self, rows: Sequence[Row], student: Student, device: torch.device) -> Batch:
        """Right-padded model inputs for a list of rows, with the positions that predict their target tokens."""
        raise NotImplementedError

    def losses(self, model: torch.nn.Module, student: Student, units: Sequence[Sequence[Row]],
               device: torch.device, loss: Loss, vocab: torch.Tensor | None) -> list[torch.Tensor]:
        """The method's ``loss`` of each task sub-batch: one forward per unit unless the kind shares work."""
        return [token_loss(model, self.collate(rows, student, device), loss, vocab) for rows in units]

    def generated(self, ids: torch.Tensor, prompt_width: int) -> torch.Tensor:
        """The new tokens of ``generate``'s output (a decoder-only model returns the prompt too)."""
        return ids


KINDS: Registry[StudentKind] = Registry("student kind", package=KINDS_PACKAGE)
register = KINDS.register  # add a kind (its name must be new)
kinds = KINDS.all  # every registered kind by name
get_kind = KINDS.get  # a kind by name; an unknown name lists the known ones
