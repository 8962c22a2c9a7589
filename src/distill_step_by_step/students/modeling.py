"""Tokenised rows, length-grouped batches, per-task losses and batched greedy decoding.

Everything is tokenised once before training (no re-tokenising per step). Batches are padded only to
their own longest row (dynamic padding) and drawn from length-sorted groups, so little compute goes to
padding. Every student kind shares this code; what differs between kinds (the prompt, how a batch is laid
out, a shared encoder pass) is the kind's (``kind.py``, ``kinds/``). The loss covers the target tokens only.

A training step never waits for the GPU: batches are built on the host as whole arrays and copied
asynchronously from pinned memory, the positions of the target tokens are computed on the host (no
boolean-mask indexing, which would read a count back from the device), and decoder-only rows go
without an attention mask (right padding under causal attention never reaches a real token, and the
mask would make the attention code check it on the device).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .kind import Batch, Loss, Row, token_loss
from .student import Student

if TYPE_CHECKING:
    from transformers import LogitsProcessorList

__all__ = ["Batch", "Loss", "Row", "token_loss"]  # kind.py's, used with these functions


def encode_rows(student: Student, sources: Sequence[str], targets: Sequence[str], max_source: int, max_target: int) -> list[Row]:
    """Tokenise pairs in one batched call per side."""
    if not sources:
        return []
    tok, kind = student.tokenizer, student.spec
    sources = [kind.source_text(s) for s in sources]
    targets = [kind.target_text(t) for t in targets]
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


def padded(seqs: Sequence[Sequence[int]], pad: int, left: bool = False) -> tuple[np.ndarray, np.ndarray]:
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


def target_positions(rows: Sequence[Row], width: int, starts: Sequence[int], student: Student) -> tuple[np.ndarray, np.ndarray]:
    """Flat output positions that predict each row's target tokens, and those tokens (as rows of the restricted
    projection when the student's output vocabulary is restricted)."""
    index = np.concatenate([i * width + s + np.arange(len(r.target)) for i, (r, s) in enumerate(zip(rows, starts))])
    targets = np.concatenate([np.asarray(r.target, dtype=np.int64) for r in rows])
    if (positions := student.output_positions()) is not None:
        targets = positions[targets]
    return index.astype(np.int64), targets


def collate(rows: Sequence[Row], student: Student, device: torch.device) -> Batch:
    """Right-padded model inputs for a list of rows, laid out as the student's kind lays them out."""
    return student.spec.collate(rows, student, device)


def units_losses(model: torch.nn.Module, student: Student, units: Sequence[Sequence[Row]],
                 device: torch.device, loss: Loss) -> list[torch.Tensor]:
    """The method's ``loss`` of each task sub-batch (``units``: lists of rows), as the student's kind computes
    them (a sequence-to-sequence kind encodes every unit's sources in one pass)."""
    vocab = None if student.output_vocab is None else student.output_vocab.to(device)
    return student.spec.losses(model, student, units, device, loss, vocab)


@torch.no_grad()
def generate(student: Student, sources: Sequence[str], *, max_new_tokens: int, batch_size: int = 64,
             max_source: int = 512, device: torch.device | None = None) -> list[str]:
    """Batched greedy decoding; inputs are length-sorted to pad little, outputs come back in order."""
    model = student.model
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    kind = student.spec
    texts = [kind.source_text(s) for s in sources]
    enc = student.tokenizer(texts, truncation=True, max_length=max_source, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(enc[i]))
    out: list[str] = [""] * len(texts)
    processors = _restricted_output(student, device)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        # decoder-only: left padding, so every prompt ends where generation starts
        ids, mask = padded([enc[i] for i in idx], student.tokenizer.pad_token_id, left=kind.left_padding)
        gen = model.generate(input_ids=to_device(ids, device), attention_mask=to_device(mask, device),
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, logits_processor=processors)
        for i, text in zip(idx, decode(student, kind.generated(gen, ids.shape[1]))):
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
