"""Few-shot chain-of-thought prompts: ``prompts/<dataset>.txt`` (or a task's ``prompt`` file) rendered for one
example.

A prompt file is the few-shot exemplars followed by the query block, whose placeholders (``{input}``,
``{premise}``, any column of a task, as ``{text}``) are replaced by the example's fields (in one pass, so
braces inside an example are left alone). The model continues the text after the query's ``A:`` / ``Reasonings:`` /
``Answer:``, in the style of the released PaLM completions, so :mod:`..data.parsing` reads its answer.
Generation stops where the model starts the next exemplar (the dataset spec's ``stop``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..data.datasets import get_spec

FIELDS = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def prompt_template(dataset: str, prepared_dir: str | Path | None = None) -> str:
    """The few-shot prompt of a dataset: the copy ``prepare`` made beside its examples, else its spec's file."""
    copy = Path(prepared_dir) / dataset / "prompt.txt" if prepared_dir is not None else None
    path = copy if copy is not None and copy.is_file() else get_spec(dataset).prompt_file()
    return path.read_text(encoding="utf-8")


def render(template: str, example: dict[str, Any]) -> str:
    """Fill the template's placeholders with the example's fields (a missing field is an error)."""

    def field(m: re.Match[str]) -> str:
        value = example.get(m.group(1))
        if not isinstance(value, str):
            raise KeyError(f"example {example.get('id')!r} has no text field {m.group(1)!r} for the prompt")
        return value

    if not FIELDS.search(template):
        raise ValueError("the prompt template has no placeholder such as {input} or {premise} (or a task's {column})")
    return FIELDS.sub(field, template.rstrip("\n"))


def stop_strings(dataset: str) -> list[str]:
    """The stop strings of a dataset's prompt."""
    return list(get_spec(dataset).stop)
