"""LoRA students: a frozen student with trained low-rank adapters (``students.<name>.lora``), through ``peft``.

Only the adapters train and only they are saved: a LoRA cell's checkpoint is ``adapter_model.safetensors`` and
``adapter_config.json``, with its tokenizer and a ``config.json`` whose :data:`BASE_KEY` entry is the base
student's own ``students`` settings (a ``package:`` reference or a model built in code from its ``init_seed``),
so that any machine with the package rebuilds the same base. Loading builds that base, applies the adapters
and merges them into its weights: inference then runs a plain model, as fast as the base. The resumable state
of a cell in training holds the whole model, so a killed LoRA run resumes bit-exact as any other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from ..settings import LoraSettings

BASE_KEY = "lora_base"  # the inference entry of a LoRA checkpoint that names its base student's settings
ADAPTER_CONFIG = "adapter_config.json"


def add_adapters(model: PreTrainedModel, settings: LoraSettings, task_type: str | None, kind: str,
                 new_parameters: frozenset[str]) -> Any:
    """``model`` with LoRA adapters (a peft ``PeftModel``): every base weight frozen, the adapters trainable."""
    from peft import LoraConfig, get_peft_model

    if task_type is None:
        raise ValueError(f"students.<name>.lora: a {kind} student cannot take LoRA adapters")
    if new_parameters:
        raise ValueError(f"students.<name>.lora: this {kind} student has {len(new_parameters)} parameters that start "
                         "from nothing pretrained (a warm-started decoder's); they must train whole, not as adapters")
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules, task_type=task_type)
    return get_peft_model(model, config)


def is_adapted(model: Any) -> bool:
    """Whether ``model`` carries LoRA adapters."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


def trainable_parameters(model: Any) -> int:
    """How many of a model's parameters train."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def portable(folder: str | Path, base: dict[str, Any]) -> None:
    """Name the base by its ``students`` reference in a saved adapter's config (peft writes the path it was
    loaded from, which differs between machines and would change the checkpoint's hash)."""
    path = Path(folder) / ADAPTER_CONFIG
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base.get("pretrained") or f"built in code: {base.get('config')}"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (Path(folder) / "README.md").unlink(missing_ok=True)  # peft's model card: a template, with its version


def merged(base: PreTrainedModel, folder: str | Path) -> PreTrainedModel:
    """The base with a checkpoint's adapters applied and merged into its weights (a plain model)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
