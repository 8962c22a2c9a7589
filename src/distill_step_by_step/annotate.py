"""The ``annotate`` stage: turn a teacher's outputs into a rationale corpus for one dataset.

``teacher.name`` in ``params.yaml`` picks the teacher:

* ``palm`` parses the recorded PaLM 540B completions shipped with the archive (the default);
* ``http`` asks any OpenAI-compatible server, ``local`` runs a ``transformers`` model on this machine
  (:mod:`distill_step_by_step.teachers`), prompting with ``prompts/<dataset>.txt``.

Every teacher writes the same records (:func:`..corpus.corpus_record`). Live annotation is lossless and
resumable: each finished completion is persisted to ``.resume/annotate/<dataset>.jsonl`` as it arrives
(:mod:`.teachers.cache`), a rerun asks only for what is missing, and requests that still fail after
their retries make the run fail with a count and the first errors, after everything else is saved.
``teacher.max_examples`` limits every split to its first N examples (small demos).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .corpus import corpus_record, load_recorded, splits_of, summarise
from .datasets import get_spec
from .errors import StageError
from .jsonio import atomic_dir, content_hash, read_jsonl, write_jsonl
from .settings import TeacherConfig
from .teachers import Reply, Request, Teacher, build_teacher
from .teachers.cache import AnnotationCache, cache_key
from .teachers.prompting import prompt_template, render, stop_strings

DEFAULT_CACHE_DIR = ".resume/annotate"


class AnnotationIncomplete(StageError):
    """Some examples could not be annotated; everything else is saved and a rerun retries only those."""


def annotate(prepared_dir: str | Path, dataset: str, out_dir: str | Path, teacher: TeacherConfig | dict[str, Any],
             cache_dir: str | Path = DEFAULT_CACHE_DIR) -> dict[str, Any]:
    """Build the corpus of ``dataset`` with the configured teacher (params.yaml: teacher)."""
    teacher = TeacherConfig.of(teacher)
    if teacher.name == "palm":
        return annotate_recorded(prepared_dir, dataset, out_dir, max_examples=teacher.max_examples)
    live = build_teacher(teacher)
    try:
        return annotate_live(live, prepared_dir, dataset, out_dir, Path(cache_dir) / f"{dataset}.jsonl",
                             teacher.max_examples)
    finally:
        live.close()


def annotate_recorded(prepared_dir: str | Path, dataset: str, out_dir: str | Path,
                      max_examples: int | None = None) -> dict[str, Any]:
    """Parse the recorded PaLM completions of every split of ``dataset`` into ``out_dir/<split>.jsonl``."""
    spec = get_spec(dataset)
    summary: dict[str, Any] = {"dataset": dataset, "teacher": "palm", "splits": {}}
    with atomic_dir(out_dir) as tmp:
        for split in splits_of(dataset):
            examples, completions = load_recorded(prepared_dir, dataset, split)
            examples, completions = examples[:max_examples], completions[:max_examples]
            records = [
                corpus_record(ex, comp, dataset)
                for ex, comp in tqdm(zip(examples, completions), total=len(examples), desc=f"{dataset}/{split}", unit="ex")
            ]
            write_jsonl(tmp / f"{split}.jsonl", records)
            summary["splits"][split] = summarise(records, spec.answer_type)
    if max_examples is not None:
        summary["max_examples"] = max_examples
    if spec.pool_note:
        summary["note"] = spec.pool_note
    return summary


@dataclass
class _Plan:
    """Every example of a dataset with its prompt and cache key (what a live run must have completed)."""

    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # split -> prepared rows
    keys: dict[str, list[str]] = field(default_factory=dict)  # split -> cache key per row
    where: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (split, id)
    prompts: dict[str, str] = field(default_factory=dict)  # key -> prompt


def _plan(teacher: Teacher, prepared_dir: str | Path, dataset: str, max_examples: int | None) -> _Plan:
    template, stop, ident = prompt_template(dataset), stop_strings(dataset), teacher.identity()
    plan = _Plan()
    for split in splits_of(dataset):
        rows = read_jsonl(Path(prepared_dir) / dataset / f"{split}.jsonl")[:max_examples]
        plan.examples[split], plan.keys[split] = rows, []
        for ex in rows:
            prompt = render(template, ex)
            key = cache_key(ident, stop, split, ex["id"], prompt)
            plan.keys[split].append(key)
            plan.where[key], plan.prompts[key] = (split, ex["id"]), prompt
    return plan


@dataclass
class _Run:
    """What one live run did: counts for the summary, and what failed."""

    stats: dict[str, Any]
    errors: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (example id, error)
    answered: set[str] = field(default_factory=set)

    def record(self, reply: Reply, cache: AnnotationCache, row: dict[str, Any]) -> None:
        """Persist a completion at once (or count its failure)."""
        self.answered.add(reply.key)
        self.stats["retries"] += max(0, reply.attempts - 1)
        if reply.ok:
            cache.add(reply.key, {**row, "completion": reply.text, "prompt_tokens": reply.prompt_tokens,
                                  "completion_tokens": reply.completion_tokens, "seconds": round(reply.seconds, 3),
                                  "attempts": reply.attempts})
            self.stats["completed"] += 1
            self.stats["prompt_tokens"] += reply.prompt_tokens or 0
            self.stats["completion_tokens"] += reply.completion_tokens or 0
        else:
            self.stats["failed"] += 1
            self.failed.append((row["id"], str(reply.error)))
            self.errors[str(reply.error).split(":")[0]] += 1


def _ask(teacher: Teacher, plan: _Plan, cache: AnnotationCache, dataset: str) -> tuple[_Run, list[Request]]:
    """Request every completion the cache lacks, persisting each as it arrives."""
    todo = [Request(k, plan.prompts[k]) for k in plan.where if cache.get(k) is None]
    hits = len(plan.where) - len(todo)
    run = _Run({"examples": len(plan.where), "cache_hits": hits, "requested": len(todo), "completed": 0, "failed": 0,
                "retries": 0, "prompt_tokens": 0, "completion_tokens": 0})
    thash = content_hash(teacher.identity())
    bar = tqdm(total=len(plan.where), initial=hits, desc=f"annotate {dataset} ({teacher.name})", unit="ex", mininterval=1.0)
    try:
        for reply in teacher.generate(todo, stop_strings(dataset)):
            if reply.key not in plan.where or reply.key in run.answered:
                continue
            split, ex_id = plan.where[reply.key]
            run.record(reply, cache, {"dataset": dataset, "split": split, "id": ex_id, "teacher": thash})
            bar.update(1)
            bar.set_postfix(failed=run.stats["failed"], retries=run.stats["retries"], refresh=False)
    finally:
        bar.close()
    return run, todo


def _write_corpus(plan: _Plan, cache: AnnotationCache, dataset: str, out_dir: str | Path) -> dict[str, Any]:
    """Parse every cached completion into the corpus; per-split statistics."""
    splits: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        for split, rows in plan.examples.items():
            cached = [cache.get(k) for k in plan.keys[split]]
            records = [corpus_record(ex, str(c["completion"]).lstrip(), dataset) for ex, c in zip(rows, cached)]
            write_jsonl(tmp / f"{split}.jsonl", records)
            stats = summarise(records, get_spec(dataset).answer_type)
            stats["prompt_tokens"] = sum(c.get("prompt_tokens") or 0 for c in cached)
            stats["completion_tokens"] = sum(c.get("completion_tokens") or 0 for c in cached)
            stats["teacher_seconds"] = round(sum(c.get("seconds") or 0.0 for c in cached), 2)
            splits[split] = stats
    return splits


def annotate_live(teacher: Teacher, prepared_dir: str | Path, dataset: str, out_dir: str | Path,
                  cache_path: str | Path, max_examples: int | None = None) -> dict[str, Any]:
    """Annotate every split of ``dataset`` with a live teacher, resuming from (and appending to) the cache.

    Raises :class:`AnnotationIncomplete` (after persisting every completion that arrived) when some
    requests failed; the corpus is written only when every example has its completion.
    """
    plan = _plan(teacher, prepared_dir, dataset, max_examples)
    started = time.monotonic()
    with AnnotationCache(cache_path) as cache:
        run, todo = _ask(teacher, plan, cache, dataset)
        missing = [plan.where[r.key][1] for r in todo if r.key not in run.answered]
        run.stats["seconds"] = round(time.monotonic() - started, 2)
        if run.failed or missing:
            raise AnnotationIncomplete(_incomplete_message(dataset, run.stats, run.failed, missing, run.errors, cache.path))
        splits = _write_corpus(plan, cache, dataset, out_dir)
    ident = teacher.identity()
    summary: dict[str, Any] = {"dataset": dataset, "teacher": teacher.name, "teacher_settings": ident,
                               "teacher_hash": content_hash(ident), "splits": splits, "run": run.stats}
    if max_examples is not None:
        summary["max_examples"] = max_examples
    if note := get_spec(dataset).pool_note:
        summary["note"] = note
    return summary


def _incomplete_message(dataset: str, run: dict[str, Any], failed: list[tuple[str, str]], missing: list[str],
                        errors: Counter[str], cache_path: Path) -> str:
    lines = [
        f"annotate {dataset}: {run['failed'] + len(missing)} of {run['requested']} requests did not complete "
        f"({run['failed']} failed after their retries, {len(missing)} got no reply); "
        f"{run['completed']} new and {run['cache_hits']} earlier completions are saved in {cache_path}. "
        "Run the stage again to ask only for the missing ones.",
        "errors: " + ", ".join(f"{n} x {kind}" for kind, n in errors.most_common()),
    ]
    lines += [f"  {ex_id}: {err[:300]}" for ex_id, err in failed[:5]]
    if missing:
        lines.append(f"  no reply for: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return "\n".join(lines)
