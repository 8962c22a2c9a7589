"""Tokenised rows, length-grouped batches, per-task losses and batched greedy decoding.

Everything is tokenised once before training (no re-tokenising per step). Batches are padded only to
their own longest row (dynamic padding) and drawn from length-sorted groups, so little compute goes to
padding. Sequence-to-sequence and decoder-only students share this code; for decoder-only models the
loss covers the target tokens only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .students import Student

CAUSAL_SEPARATOR = "\nOutput:"


@dataclass
class Row:
    """One tokenised (source, target) pair; ``target`` ends with EOS."""

    source: list[int]
    target: list[int]

    def __len__(self) -> int:
        return len(self.source) + len(self.target)


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


def collate(rows: Sequence[Row], student: Student, device: torch.device) -> dict[str, torch.Tensor]:
    """Pad a list of rows to their longest (right padding) into model inputs with ``-100`` labels."""
    pad = student.tokenizer.pad_token_id
    if student.is_causal:
        seqs = [r.source + r.target for r in rows]
        n = max(map(len, seqs))
        ids = torch.full((len(rows), n), pad, dtype=torch.long)
        labels = torch.full((len(rows), n), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, (r, s) in enumerate(zip(rows, seqs)):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
            labels[i, len(r.source): len(s)] = torch.tensor(r.target)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}
    n_src = max(len(r.source) for r in rows)
    n_tgt = max(len(r.target) for r in rows)
    ids = torch.full((len(rows), n_src), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), n_src), dtype=torch.long)
    labels = torch.full((len(rows), n_tgt), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.source)] = torch.tensor(r.source)
        mask[i, : len(r.source)] = 1
        labels[i, : len(r.target)] = torch.tensor(r.target)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _mean_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)


@contextmanager
def _head_only_at(model: torch.nn.Module, keep: torch.Tensor) -> Iterator[bool]:
    """While active, the output projection runs only at positions where ``keep`` (batch x time) is true.

    The vocabulary projection is the largest matmul of a small student's step (MiniLM: 384 x 30522 per
    target token, more than a decoder layer), and padding positions are thrown away by the loss anyway:
    projecting only the real target tokens gives the same loss for less compute and logits memory. The
    model's own forward is kept (a pre-hook on its output embeddings), so it works for any architecture
    whose head is ``get_output_embeddings()``; yields False (and changes nothing) where there is none.
    """
    core = getattr(model, "module", model)  # DDP wrapper
    head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear):
        yield False
        return

    def select(_module: torch.nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        return (hidden[keep] if hidden.shape[:2] == keep.shape else hidden, *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield True
    finally:
        handle.remove()


def token_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], causal: bool) -> torch.Tensor:
    """Mean cross-entropy over the batch's target tokens (what HF's ``loss`` is, computed in fp32)."""
    labels = batch["labels"]
    if causal:
        # position t predicts token t+1; the last position predicts nothing
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != -100
        with _head_only_at(model, keep) as selected:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return _mean_ce(logits, labels[:, 1:][keep[:, :-1]]) if selected else _mean_ce(logits[:, :-1], labels[:, 1:])
    core = getattr(model, "module", model)
    dec_in = core.prepare_decoder_input_ids_from_labels(labels=labels)
    return _decoder_loss(model, labels, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         decoder_input_ids=dec_in)


def _decoder_loss(model: torch.nn.Module, labels: torch.Tensor, **inputs: Any) -> torch.Tensor:
    """Token-mean cross-entropy of an encoder-decoder forward, projecting only the real target tokens."""
    keep = labels != -100
    with _head_only_at(model, keep) as selected:
        logits = model(**inputs).logits
    return _mean_ce(logits, labels[keep] if selected else labels)


def units_loss(model: torch.nn.Module, student: Student, units: Sequence[tuple[Sequence[Row], float]],
               device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``sum(weight * token-mean loss)`` over task sub-batches; returns the total and each unit's loss.

    For encoder-decoder students every unit's sources go through the encoder in one pass (each row is
    encoded independently under its attention mask, so this equals separate passes) and each unit is
    decoded on its own, padded only to its own longest target: one embedding backward and larger matmuls
    instead of one full forward per task.
    """
    if student.is_causal or len(units) == 1:
        parts = [token_loss(model, collate(rows, student, device), student.is_causal) for rows, _ in units]
    else:
        from transformers.modeling_outputs import BaseModelOutput

        rows_all = [r for rows, _ in units for r in rows]
        enc = collate(rows_all, student, device)
        core = getattr(model, "module", model)
        hidden = core.get_encoder()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        parts, start = [], 0
        for rows, _ in units:
            batch = collate(rows, student, device)
            sl = slice(start, start + len(rows))
            start += len(rows)
            dec_in = core.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
            parts.append(_decoder_loss(model, batch["labels"], encoder_outputs=BaseModelOutput(last_hidden_state=hidden[sl]),
                                       attention_mask=enc["attention_mask"][sl], decoder_input_ids=dec_in))
    total = sum(weight * part for (_, weight), part in zip(units, parts))
    return total, parts


@torch.no_grad()
def generate(student: Student, sources: Sequence[str], *, max_new_tokens: int, batch_size: int = 64,
             max_source: int = 512, device: torch.device | None = None) -> list[str]:
    """Batched greedy decoding; inputs are length-sorted to pad little, outputs come back in order."""
    model = student.model
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    tok = student.tokenizer
    texts = [causal_prompt(s) for s in sources] if student.is_causal else list(sources)
    enc = tok(texts, truncation=True, max_length=max_source, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(enc[i]))
    out: list[str] = [""] * len(texts)
    pad = tok.pad_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        n = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), n), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), n), dtype=torch.long)
        for j, i in enumerate(idx):
            seq = torch.tensor(enc[i])
            if student.is_causal:  # left padding, so every prompt ends where generation starts
                ids[j, n - len(seq):], mask[j, n - len(seq):] = seq, 1
            else:
                ids[j, : len(seq)], mask[j, : len(seq)] = seq, 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        if student.is_causal:
            gen = gen[:, n:]
        for j, text in enumerate(tok.batch_decode(gen, skip_special_tokens=True)):
            out[idx[j]] = text.strip()
    model.train(was_training)
    return out
