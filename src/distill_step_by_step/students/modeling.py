"""Tokenised rows, length-grouped batches, per-task losses and batched greedy decoding.

Everything is tokenised once before training (no re-tokenising per step). Batches are padded only to
their own longest row (dynamic padding) and drawn from length-sorted groups, so little compute goes to
padding. Sequence-to-sequence and decoder-only students share this code; for decoder-only models the
loss covers the target tokens only.

A training step never waits for the GPU: batches are built on the host as whole arrays and copied
asynchronously from pinned memory, the positions of the target tokens are computed on the host (no
boolean-mask indexing, which would read a count back from the device), and decoder-only rows go
without an attention mask (right padding under causal attention never reaches a real token, and the
mask would make the attention code check it on the device).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .student import Student

if TYPE_CHECKING:
    from transformers import LogitsProcessorList

CAUSAL_SEPARATOR = "\nOutput:"
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

    @property
    def output_shape(self) -> tuple[int, int]:
        """(batch, time) of the outputs that go through the vocabulary head."""
        ids = self.decoder_input_ids if self.decoder_input_ids is not None else self.input_ids
        return ids.shape[0], ids.shape[1]


def causal_prompt(text: str) -> str:
    """How a decoder-only student is prompted: the source, then a fixed separator."""
    return text + CAUSAL_SEPARATOR


def encode_rows(student: Student, sources: Sequence[str], targets: Sequence[str], max_source: int, max_target: int) -> list[Row]:
    """Tokenise pairs in one batched call per side."""
    if not sources:
        return []
    tok = student.tokenizer
    if student.is_causal:
        sources = [causal_prompt(s) for s in sources]
        targets = [" " + t for t in targets]
    src = tok(list(sources), truncation=True, max_length=max_source, add_special_tokens=True)["input_ids"]
    tgt = tok(list(targets), truncation=True, max_length=max_target - 1, add_special_tokens=False)["input_ids"]
    return [Row(list(s), list(t) + [student.eos_id]) for s, t in zip(src, tgt)]


def decode(student: Student, ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
    """Generated token ids as answer text: special tokens dropped, outer spaces stripped."""
    return [text.strip() for text in student.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def length_grouped_order(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_batches: int = 50) -> list[list[int]]:
    """Batches of indices for one epoch: shuffle, sort within groups of ``group_batches`` batches by
    length, cut into batches, shuffle the batches. Deterministic in (seed, epoch), so a resumed run
    replays exactly the same order."""
    rng = np.random.RandomState((seed * 1_000_003 + epoch) % (2**32))
    perm = rng.permutation(len(lengths))
    group = batch_size * max(1, group_batches)
    batches: list[list[int]] = []
    for start in range(0, len(perm), group):
        chunk = sorted(perm[start:start + group].tolist(), key=lambda i: -lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _padded(seqs: Sequence[Sequence[int]], pad: int, left: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Token ids padded to the longest sequence, and the 0/1 mask of real tokens."""
    n = max(map(len, seqs))
    ids = np.full((len(seqs), n), pad, dtype=np.int64)
    mask = np.zeros((len(seqs), n), dtype=np.int64)
    for i, s in enumerate(seqs):
        span = slice(n - len(s), n) if left else slice(0, len(s))
        ids[i, span] = s
        mask[i, span] = 1
    return ids, mask


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on the device; to a GPU through pinned memory, so the copy does not wait for it."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _targets(rows: Sequence[Row], width: int, starts: Sequence[int], student: Student) -> tuple[np.ndarray, np.ndarray]:
    """Flat output positions that predict each row's target tokens, and those tokens (as rows of the restricted
    projection when the student's output vocabulary is restricted)."""
    index = np.concatenate([i * width + s + np.arange(len(r.target)) for i, (r, s) in enumerate(zip(rows, starts))])
    targets = np.concatenate([np.asarray(r.target, dtype=np.int64) for r in rows])
    if (positions := student.output_positions()) is not None:
        targets = positions[targets]
    return index.astype(np.int64), targets


def collate(rows: Sequence[Row], student: Student, device: torch.device) -> Batch:
    """Right-padded model inputs for a list of rows (decoder-only: source + target in one sequence)."""
    pad = student.tokenizer.pad_token_id
    if student.is_causal:
        ids, _ = _padded([r.source + r.target for r in rows], pad)
        # position t predicts token t + 1: the first target token is predicted at the last source position
        index, targets = _targets(rows, ids.shape[1], [len(r.source) - 1 for r in rows], student)
        return Batch(to_device(ids, device), None, to_device(index, device), to_device(targets, device))
    ids, mask = _padded([r.source for r in rows], pad)
    return _decoder_batch(rows, student, device, to_device(ids, device), to_device(mask, device))


def _decoder_batch(rows: Sequence[Row], student: Student, device: torch.device, input_ids: torch.Tensor | None,
                   attention_mask: torch.Tensor) -> Batch:
    """A sequence-to-sequence batch: the decoder reads the target shifted right behind the start token."""
    start = student.model.config.decoder_start_token_id
    dec, _ = _padded([[start] + r.target[:-1] for r in rows], student.tokenizer.pad_token_id)
    index, targets = _targets(rows, dec.shape[1], [0] * len(rows), student)
    return Batch(input_ids, attention_mask, to_device(index, device), to_device(targets, device), to_device(dec, device))


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


def _logits_at_targets(model: torch.nn.Module, batch: Batch, vocab: torch.Tensor | None,
                       **inputs: torch.Tensor | None) -> torch.Tensor:
    """The logits of the target positions only (batch.target_index order), over ``vocab`` when given."""
    with _head_only_at(model, batch, vocab) as selected:
        logits = model(**inputs).logits
    if selected:
        return logits
    logits = logits.flatten(0, 1).index_select(0, batch.target_index)
    return logits if vocab is None else logits.index_select(1, vocab)


def token_loss(model: torch.nn.Module, batch: Batch, causal: bool, loss: Loss, vocab: torch.Tensor | None = None) -> torch.Tensor:
    """The method's ``loss`` of the batch's logits at its target tokens (over the restricted ``vocab`` when
    given, the batch's targets then being rows of it)."""
    if causal:
        logits = _logits_at_targets(model, batch, vocab, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    else:
        logits = _logits_at_targets(model, batch, vocab, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                    decoder_input_ids=batch.decoder_input_ids)
    return loss(logits, batch.target_ids)


def units_losses(model: torch.nn.Module, student: Student, units: Sequence[Sequence[Row]],
                 device: torch.device, loss: Loss) -> list[torch.Tensor]:
    """The method's ``loss`` of each task sub-batch (``units``: lists of rows).

    For encoder-decoder students every unit's sources go through the encoder in one pass (each row is
    encoded independently under its attention mask, so this equals separate passes) and each unit is
    decoded on its own, padded only to its own longest target: one embedding backward and larger matmuls
    instead of one full forward per task.
    """
    vocab = None if student.output_vocab is None else student.output_vocab.to(device)
    if student.is_causal or len(units) == 1:
        return [token_loss(model, collate(rows, student, device), student.is_causal, loss, vocab) for rows in units]
    from transformers.modeling_outputs import BaseModelOutput

    core = getattr(model, "module", model)
    ids, mask = _padded([r.source for rows in units for r in rows], student.tokenizer.pad_token_id)
    mask_t = to_device(mask, device)
    hidden = core.get_encoder()(input_ids=to_device(ids, device), attention_mask=mask_t).last_hidden_state
    losses, start = [], 0
    for rows in units:
        part = slice(start, start + len(rows))
        start += len(rows)
        # the encoder's outputs are padded to the longest source of all units: its mask goes with them
        batch = _decoder_batch(rows, student, device, None, mask_t[part])
        logits = _logits_at_targets(model, batch, vocab, encoder_outputs=BaseModelOutput(last_hidden_state=hidden[part]),
                                    attention_mask=batch.attention_mask, decoder_input_ids=batch.decoder_input_ids)
        losses.append(loss(logits, batch.target_ids))
    return losses


@torch.no_grad()
def generate(student: Student, sources: Sequence[str], *, max_new_tokens: int, batch_size: int = 64,
             max_source: int = 512, device: torch.device | None = None) -> list[str]:
    """Batched greedy decoding; inputs are length-sorted to pad little, outputs come back in order."""
    model = student.model
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    texts = [causal_prompt(s) for s in sources] if student.is_causal else list(sources)
    enc = student.tokenizer(texts, truncation=True, max_length=max_source, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(enc[i]))
    out: list[str] = [""] * len(texts)
    processors = _restricted_output(student, device)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        # decoder-only: left padding, so every prompt ends where generation starts
        ids, mask = _padded([enc[i] for i in idx], student.tokenizer.pad_token_id, left=student.is_causal)
        gen = model.generate(input_ids=to_device(ids, device), attention_mask=to_device(mask, device),
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, logits_processor=processors)
        if student.is_causal:
            gen = gen[:, ids.shape[1]:]
        for i, text in zip(idx, decode(student, gen)):
            out[i] = text
    model.train(was_training)
    return out


def _restricted_output(student: Student, device: torch.device) -> "LogitsProcessorList | None":
    """A logits processor that leaves only the student's output vocabulary to choose from (greedy decoding then
    picks what the restricted projection it was trained with would)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    if student.output_vocab is None:
        return None
    vocab = student.output_vocab.to(device)

    class OnlyOutputVocab(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            masked = torch.full_like(scores, float("-inf"))
            masked[:, vocab] = scores[:, vocab]
            return masked

    return LogitsProcessorList([OnlyOutputVocab()])
