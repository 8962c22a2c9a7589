"""A reference built the way the authors' code (google-research/distilling-step-by-step) trains a cell.

Written for the benchmarks from the published design, not copied:

* tokenisation of every example up front, as ``datasets.map`` does: ``predict: x`` and ``explain: x``
  inputs (truncated to ``max_input``), label and rationale targets truncated to 256 tokens;
* ``TaskPrefixDataCollator``: a ``DataCollatorForSeq2Seq`` that splits each batch's features into a
  ``pred`` and an ``expl`` set (the authors build a pandas DataFrame per batch for this; when pandas is
  not installed the same column selection and renaming is done on dicts, which costs less) and pads
  each with the parent collator (``decoder_input_ids`` from the model, labels padded with -100);
* ``TaskPrefixTrainer(Seq2SeqTrainer)`` whose ``compute_loss`` runs ``model(**inputs['pred'])`` and
  ``model(**inputs['expl'])`` and returns ``alpha * pred.loss + (1 - alpha) * expl.loss``, and whose
  ``prediction_step`` runs the parent ``prediction_step`` (``predict_with_generate``: a loss forward and
  a greedy ``generate`` to ``generation_max_length`` = 64) on ``pred`` and, with ``output_rationale``,
  on ``expl``;
* ``Seq2SeqTrainingArguments`` as in ``train_utils.py``: evaluation and saving every ``eval_steps``
  (``save_total_limit=1``), ``predict_with_generate``, ``remove_unused_columns=False``, one batch size
  for training and evaluation in the authors' code (settable apart here), lr 5e-5, the Trainer's
  default AdamW and linear decay, gradient clipping at 1.0.

Targets end with the tokenizer's EOS, as T5's tokenizer writes them (a BERT tokenizer would also put
[CLS] in front; that token is left out so both implementations learn exactly the same targets).
Any seq2seq model works, including the warm-started MiniLM ``EncoderDecoderModel`` built by
``students.build_student``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback
from transformers.trainer_callback import PrinterCallback

try:  # the authors' collator builds a DataFrame per batch; pandas is optional here
    import pandas as pd
except ImportError:  # pragma: no cover - depends on the environment
    pd = None

from distill_step_by_step.methods.registry import method_settings, predict_source
from distill_step_by_step.methods.step_by_step import explain_source

HAS_PANDAS = pd is not None
_STEP_BY_STEP = method_settings("step_by_step", {"alpha": 0.5})


def _targets(tokenizer, texts: list[str], max_length: int, eos_id: int) -> list[list[int]]:
    ids = tokenizer(texts, max_length=max_length - 1, truncation=True, add_special_tokens=False)["input_ids"]
    return [list(t) + [eos_id] for t in ids]


def tokenize(student, records: list[dict[str, Any]], max_input: int = 1024, max_target: int = 256) -> list[dict[str, list[int]]]:
    """The authors' ``tokenize_function`` for ``task_prefix`` over a list of corpus records (gold labels,
    teacher rationales), one batched call per field as ``datasets.map(batched=True)`` does."""
    tok = student.tokenizer
    sep = student.pair_separator
    limit = min(max_input, getattr(tok, "model_max_length", max_input) or max_input)
    pred = tok([predict_source(r, _STEP_BY_STEP, sep) for r in records], max_length=limit, truncation=True)
    expl = tok([explain_source(r, sep) for r in records], max_length=limit, truncation=True)
    labels = _targets(tok, [r["label"] for r in records], max_target, student.eos_id)
    aux = _targets(tok, [r.get("rationale") or "" for r in records], max_target, student.eos_id)
    return [
        {"input_ids": pred["input_ids"][i], "attention_mask": pred["attention_mask"][i],
         "expl_input_ids": expl["input_ids"][i], "expl_attention_mask": expl["attention_mask"][i],
         "labels": labels[i], "aux_labels": aux[i]}
        for i in range(len(records))
    ]


_PRED_DROP = ("aux_labels", "expl_input_ids", "expl_attention_mask")
_EXPL_DROP = ("labels", "input_ids", "attention_mask")
_EXPL_RENAME = {"aux_labels": "labels", "expl_input_ids": "input_ids", "expl_attention_mask": "attention_mask"}


class TaskPrefixDataCollator(DataCollatorForSeq2Seq):
    """Pads the ``pred`` and ``expl`` feature sets of one batch separately (two parent-collator calls)."""

    def __call__(self, features, return_tensors=None):
        if HAS_PANDAS:
            df = pd.DataFrame(features)
            pred_features = df.loc[:, ~df.columns.isin(list(_PRED_DROP))].to_dict("records")
            expl_features = df.loc[:, ~df.columns.isin(list(_EXPL_DROP))].rename(columns=_EXPL_RENAME).to_dict("records")
        else:
            pred_features = [{k: v for k, v in f.items() if k not in _PRED_DROP} for f in features]
            expl_features = [{_EXPL_RENAME.get(k, k): v for k, v in f.items() if k not in _EXPL_DROP} for f in features]
        return {"pred": super().__call__(pred_features, return_tensors),
                "expl": super().__call__(expl_features, return_tensors)}


class TaskPrefixTrainer(Seq2SeqTrainer):
    """Two forward passes per step; generation-based evaluation of one or both tasks."""

    def __init__(self, alpha: float, output_rationale: bool, **kwargs):
        super().__init__(**kwargs)
        self.alpha = alpha
        self.output_rationale = output_rationale

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pred_outputs = model(**inputs["pred"])
        expl_outputs = model(**inputs["expl"])
        loss = self.alpha * pred_outputs.loss + (1.0 - self.alpha) * expl_outputs.loss
        return (loss, {"pred": pred_outputs, "expl": expl_outputs}) if return_outputs else loss

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None, **gen_kwargs):
        pred_outputs = super().prediction_step(model, inputs["pred"], prediction_loss_only=False, ignore_keys=ignore_keys)
        if self.output_rationale:
            expl_outputs = super().prediction_step(model, inputs["expl"], prediction_loss_only=False, ignore_keys=ignore_keys)
        else:
            expl_outputs = pred_outputs  # placeholder only
        loss = self.alpha * pred_outputs[0] + (1 - self.alpha) * expl_outputs[0]
        return loss, [pred_outputs[1], expl_outputs[1]], [pred_outputs[2], expl_outputs[2]]


def compute_metrics_text(tokenizer):
    """Exact-match label accuracy of the generated ``pred`` outputs (the authors' text metric)."""
    def compute_metrics(eval_pred):
        predictions, labels = eval_pred
        preds = np.where(predictions[0] != -100, predictions[0], tokenizer.pad_token_id)
        decoded_preds = tokenizer.batch_decode(preds, skip_special_tokens=True)
        gold = np.where(labels[0] != -100, labels[0], tokenizer.pad_token_id)
        decoded_labels = tokenizer.batch_decode(gold, skip_special_tokens=True)
        return {"accuracy": float(np.mean(np.array(decoded_preds) == np.array(decoded_labels)))}

    return compute_metrics


class StepClock(TrainerCallback):
    """Wall-clock time at the end of every optimizer step (for throughput figures)."""

    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())


def build_trainer(student, train_rows: list[dict], eval_rows: list[dict] | None, out_dir: str | Path, *, max_steps: int,
                  eval_steps: int | None, batch_size: int, eval_batch_size: int | None = None, lr: float = 5e-5,
                  alpha: float = 0.5, output_rationale: bool = True, gen_max_len: int = 64, seed: int = 0,
                  bf16: bool = False, save: bool = True, callbacks: list | None = None,
                  collator: DataCollatorForSeq2Seq | None = None, quiet: bool = True) -> TaskPrefixTrainer:
    """The authors' ``train_and_evaluate`` set-up around an already built student.

    ``eval_steps=None`` trains without evaluation or saving (for the step-throughput benchmark).
    """
    evaluating = eval_steps is not None and eval_rows is not None
    args = Seq2SeqTrainingArguments(
        str(out_dir),
        remove_unused_columns=False,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=eval_steps if evaluating else None,
        save_strategy="steps" if (evaluating and save) else "no",
        save_steps=eval_steps if (evaluating and save) else None,
        save_total_limit=1,
        logging_strategy="steps",
        logging_steps=eval_steps or max_steps,
        max_steps=max_steps,
        learning_rate=lr,
        gradient_accumulation_steps=1,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=eval_batch_size or batch_size,
        predict_with_generate=True,
        seed=seed,
        bf16=bf16,
        generation_max_length=gen_max_len,
        prediction_loss_only=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = TaskPrefixTrainer(
        alpha=alpha,
        output_rationale=output_rationale,
        model=student.model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows if evaluating else None,
        data_collator=collator or TaskPrefixDataCollator(tokenizer=student.tokenizer, model=student.model),
        processing_class=student.tokenizer,
        compute_metrics=compute_metrics_text(student.tokenizer),
        callbacks=callbacks,
    )
    if quiet:
        trainer.remove_callback(PrinterCallback)  # the log lines it prints would clutter the benchmark output
    return trainer
