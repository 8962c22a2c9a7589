"""``seq2seq``: any sequence-to-sequence checkpoint (T5 v1.1 by hub name or folder), or one built in code from a
``config`` (the smoke grid's tiny T5). The decoder reads the target shifted right behind its start token; a
step encodes every task sub-batch's sources in one pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..kind import Batch, Loss, Row, StudentKind, logits_at_targets, register
from ..modeling import padded, target_positions, to_device
from ..student import Student, resolve_ref


def built_in_code(cfg: Any, auto: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A small configuration built in code (tests, benchmarks) with ``auto``'s class, seeded by ``init_seed``."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_ref(cfg.tokenizer or cfg.pretrained))
    conf = dict(cfg.config)
    model_type = conf.pop("model_type")
    conf.setdefault("vocab_size", len(tokenizer))
    torch.manual_seed(cfg.init_seed)
    return auto.from_config(AutoConfig.for_model(model_type, **conf)), tokenizer


def decoder_batch(rows: Sequence[Row], student: Student, device: torch.device, input_ids: torch.Tensor | None,
                  attention_mask: torch.Tensor) -> Batch:
    """A sequence-to-sequence batch: the decoder reads the target shifted right behind the start token."""
    start = student.model.config.decoder_start_token_id
    dec, _ = padded([[start] + r.target[:-1] for r in rows], student.tokenizer.pad_token_id)
    index, targets = target_positions(rows, dec.shape[1], [0] * len(rows), student)
    return Batch(input_ids, attention_mask, to_device(index, device), to_device(targets, device), to_device(dec, device))


class Seq2Seq(StudentKind):
    name = "seq2seq"
    lora_task = "SEQ_2_SEQ_LM"

    def build(self, cfg: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, frozenset[str]]:
        if cfg.config is not None:
            return (*built_in_code(cfg, AutoModelForSeq2SeqLM), frozenset())
        model, new = self.pretrained(cfg)
        return model, AutoTokenizer.from_pretrained(resolve_ref(cfg.tokenizer or cfg.pretrained)), new

    def pretrained(self, cfg: Any) -> tuple[PreTrainedModel, frozenset[str]]:
        """The model of a ``pretrained`` entry, and its parameters that start from nothing pretrained."""
        return AutoModelForSeq2SeqLM.from_pretrained(resolve_ref(cfg.pretrained)), frozenset()

    def load(self, path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        return AutoModelForSeq2SeqLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)

    def decoder_start(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
        """The decoder's start token: the checkpoint's, else PAD (as T5's)."""
        start = getattr(model.config, "decoder_start_token_id", None)
        return tokenizer.pad_token_id if start is None else start

    def finish(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        start = self.decoder_start(model, tokenizer)
        model.config.decoder_start_token_id = start
        model.generation_config.decoder_start_token_id = start

    def collate(self, rows: Sequence[Row], student: Student, device: torch.device) -> Batch:
        ids, mask = padded([r.source for r in rows], student.tokenizer.pad_token_id)
        return decoder_batch(rows, student, device, to_device(ids, device), to_device(mask, device))

    def losses(self, model: torch.nn.Module, student: Student, units: Sequence[Sequence[Row]], device: torch.device,
               loss: Loss, vocab: torch.Tensor | None) -> list[torch.Tensor]:
        """Every unit's sources go through the encoder in one pass (each row is encoded independently under its
        attention mask, so this equals separate passes) and each unit is decoded on its own, padded only to its
        own longest target: one embedding backward and larger matmuls instead of one full forward per task."""
        if len(units) == 1:
            return super().losses(model, student, units, device, loss, vocab)
        from transformers.modeling_outputs import BaseModelOutput

        core = getattr(model, "module", model)
        ids, mask = padded([r.source for rows in units for r in rows], student.tokenizer.pad_token_id)
        mask_t = to_device(mask, device)
        hidden = core.get_encoder()(input_ids=to_device(ids, device), attention_mask=mask_t).last_hidden_state
        losses, start = [], 0
        for rows in units:
            part = slice(start, start + len(rows))
            start += len(rows)
            # the encoder's outputs are padded to the longest source of all units: its mask goes with them
            batch = decoder_batch(rows, student, device, None, mask_t[part])
            logits = logits_at_targets(model, batch, vocab, encoder_outputs=BaseModelOutput(last_hidden_state=hidden[part]),
                                       attention_mask=batch.attention_mask, decoder_input_ids=batch.decoder_input_ids)
            losses.append(loss(logits, batch.target_ids))
        return losses


register(Seq2Seq())
