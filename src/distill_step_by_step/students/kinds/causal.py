"""``causal``: a decoder-only language model (SmolLM2, Gemma 3: a folder, hub name or GGUF file; or one built in
code from a ``config``). Source and target are one sequence behind a fixed separator; the loss covers the target
tokens; prompts are left-padded for generation, which returns them before the new tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..kind import Batch, Row, StudentKind, register
from ..modeling import padded, target_positions, to_device
from ..student import Student, load_causal_lm, resolve_ref
from .seq2seq import built_in_code

SEPARATOR = "\nOutput:"


class Causal(StudentKind):
    name = "causal"
    lora_task = "CAUSAL_LM"
    left_padding = True

    def build(self, cfg: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, frozenset[str]]:
        if cfg.config is not None:
            model, tokenizer = built_in_code(cfg, AutoModelForCausalLM)
        else:
            model, tokenizer = load_causal_lm(resolve_ref(cfg.pretrained), cfg.gguf_file)
            if cfg.tokenizer:
                tokenizer = AutoTokenizer.from_pretrained(resolve_ref(cfg.tokenizer))
        return model, tokenizer, frozenset()

    def load(self, path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)

    def finish(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        tokenizer.padding_side = "left"  # generation appends to the right end of each prompt

    def source_text(self, text: str) -> str:
        return text + SEPARATOR

    def target_text(self, text: str) -> str:
        return " " + text

    def collate(self, rows: Sequence[Row], student: Student, device: torch.device) -> Batch:
        ids, _ = padded([r.source + r.target for r in rows], student.tokenizer.pad_token_id)
        # position t predicts token t + 1: the first target token is predicted at the last source position
        index, targets = target_positions(rows, ids.shape[1], [len(r.source) - 1 for r in rows], student)
        return Batch(to_device(ids, device), None, to_device(index, device), to_device(targets, device))

    def generated(self, ids: torch.Tensor, prompt_width: int) -> torch.Tensor:
        return ids[:, prompt_width:]


register(Causal())
