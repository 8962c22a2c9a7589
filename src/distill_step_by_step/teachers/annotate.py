"""The ``annotate`` stage: turn a teacher's outputs into a rationale corpus for one dataset.

``teacher.name`` in ``params.yaml`` picks the teacher:

* ``palm`` parses the recorded PaLM 540B completions shipped with the archive (the default);
* ``http`` asks any OpenAI-compatible server, ``local`` runs a ``transformers`` model on this machine
  (:mod:`distill_step_by_step.teachers`), prompting with ``prompts/<dataset>.txt`` (a task: its ``prompt``);
* ``human`` takes the rationales people wrote (e-SNLI's ``explanation_1``, CoS-E for CommonsenseQA, ANLI's
  ``reason``, a task's ``rationale`` column), with the gold label as the teacher's.

Every teacher writes the same records (:func:`..data.corpus.corpus_record`). Live annotation is lossless and
resumable: each finished completion is persisted to ``.resume/annotate/<dataset>.jsonl`` as it arrives
(:mod:`.cache`), a rerun asks only for what is missing, and requests that still fail after
their retries make the run fail with a count and the first errors, after everything else is saved.
A request the server refuses for good (an HTTP 400 for an over-long prompt, a 413, a 422...) would fail
the same way on every rerun, so it is recorded in the cache instead and its example is left out of the
corpus like an unparsed completion, counted in the summary; up to ``teacher.max_failed_share`` of each
split, beyond which the stage stops (:class:`TooManyFailedRequests`).
``teacher.max_examples`` limits every split to its first N examples (small demos).
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..data.corpus import corpus_record, failed_record, human_record, load_human, load_recorded, splits_of, summarise
from ..data.datasets import get_spec
from ..errors import StageError
from ..jsonio import atomic_dir, content_hash, read_jsonl, write_jsonl
from ..settings import LIVE_TEACHERS, TeacherConfig
from .cache import AnnotationCache, cache_key, is_failure
from .prompting import prompt_template, render, stop_strings
from .teacher import Reply, Request, Teacher

DEFAULT_CACHE_DIR = ".resume/annotate"


class AnnotationIncomplete(StageError):
    """Some examples could not be annotated; everything else is saved and a rerun retries only those."""


class TooManyFailedRequests(StageError):
    """More of a split's requests failed for good than ``teacher.max_failed_share`` allows. They are recorded,
    so a rerun does not ask them again: only a higher limit or a change to what they send gets past this."""


def build_teacher(cfg: TeacherConfig | dict[str, Any]) -> Teacher:
    """The live teacher named by ``cfg.name``, with its (checked) settings block, ``teacher.http`` or ``teacher.local``."""
    cfg = TeacherConfig.of(cfg)
    if cfg.name not in LIVE_TEACHERS:
        raise ValueError(f"teacher.name: {cfg.name!r} is not a live teacher ({', '.join(LIVE_TEACHERS)})")
    if cfg.name == "http":
        from .http import HttpTeacher

        return HttpTeacher(cfg.http)
    from .local import LocalTeacher

    return LocalTeacher(cfg.local)


def annotate(prepared_dir: str | Path, dataset: str, out_dir: str | Path, teacher: TeacherConfig | dict[str, Any],
             cache_dir: str | Path = DEFAULT_CACHE_DIR) -> dict[str, Any]:
    """Build the corpus of ``dataset`` with the configured teacher (params.yaml: teacher)."""
    teacher = TeacherConfig.of(teacher)
    if teacher.name == "human":
        return annotate_human(prepared_dir, dataset, out_dir, max_examples=teacher.max_examples)
    if teacher.name == "palm":
        if get_spec(dataset).task is not None:
            raise StageError(f"annotate {dataset}: a task has no recorded PaLM completions; set teacher.name to http, "
                             "local (a live teacher with the task's prompt) or human (its rationale column)")
        return annotate_recorded(prepared_dir, dataset, out_dir, max_examples=teacher.max_examples)
    live = build_teacher(teacher)
    try:
        summary = annotate_live(live, prepared_dir, dataset, out_dir, Path(cache_dir) / f"{dataset}.jsonl",
                                teacher.max_examples, teacher.max_failed_share)
    finally:
        live.close()
    price = teacher.http.price_per_million if teacher.name == "http" else None
    return summary | ({"cost": annotation_cost(summary, price)} if price else {})


def annotation_cost(summary: dict[str, Any], price: dict[str, float]) -> dict[str, Any]:
    """What a corpus's completions cost at ``price`` (USD per million input and output tokens): every split's
    prompt and completion tokens, cached ones included (the corpus's price, not one run's)."""
    tokens = {kind: sum(split.get(f"{kind}_tokens") or 0 for split in summary["splits"].values())
              for kind in ("prompt", "completion")}
    usd = (tokens["prompt"] * price["input"] + tokens["completion"] * price["output"]) / 1e6
    return {"usd": round(usd, 4), "prompt_tokens": tokens["prompt"], "completion_tokens": tokens["completion"],
            "price_per_million": dict(price)}


def annotate_recorded(prepared_dir: str | Path, dataset: str, out_dir: str | Path,
                      max_examples: int | None = None) -> dict[str, Any]:
    """Parse the recorded PaLM completions of every split of ``dataset`` into ``out_dir/<split>.jsonl``."""
    def records(split: str) -> list[dict[str, Any]]:
        examples, completions = load_recorded(prepared_dir, dataset, split)
        examples, completions = examples[:max_examples], completions[:max_examples]
        return [corpus_record(ex, comp, dataset)
                for ex, comp in tqdm(zip(examples, completions), total=len(examples), desc=f"{dataset}/{split}", unit="ex")]

    return _write_split_corpus(dataset, out_dir, {"dataset": dataset, "teacher": "palm"}, records, max_examples)


def annotate_human(prepared_dir: str | Path, dataset: str, out_dir: str | Path,
                   max_examples: int | None = None) -> dict[str, Any]:
    """The rationales people wrote as the corpus of ``dataset``: the teacher's label is the gold label; an example
    without a rationale stays, unparsed (counted), like a completion that did not parse."""
    column = get_spec(dataset).rationale_column()
    if column is None:
        raise StageError(f"annotate {dataset}: teacher.name is human, but the dataset has no rationales written by "
                         f"people (a task names their column in tasks.{dataset}.rationale)")

    def records(split: str) -> list[dict[str, Any]]:
        examples, rationales = load_human(prepared_dir, dataset, split)
        return [human_record(ex, r) for ex, r in zip(examples[:max_examples], rationales[:max_examples])]

    head = {"dataset": dataset, "teacher": "human", "rationale_column": column}
    return _write_split_corpus(dataset, out_dir, head, records, max_examples)


def _write_split_corpus(dataset: str, out_dir: str | Path, head: dict[str, Any],
                        records_of: Callable[[str], list[dict[str, Any]]], max_examples: int | None) -> dict[str, Any]:
    """Write each split's records (a teacher that needs no requests) and the corpus summary."""
    spec = get_spec(dataset)
    summary: dict[str, Any] = {**head, "splits": {}}
    with atomic_dir(out_dir) as tmp:
        for split in splits_of(dataset):
            records = records_of(split)
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
    template, stop, ident = prompt_template(dataset, prepared_dir), stop_strings(dataset), teacher.identity()
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
        """Persist a completion or a permanent failure at once (or count a failure a rerun may cure)."""
        self.answered.add(reply.key)
        self.stats["retries"] += max(0, reply.attempts - 1)
        if reply.ok:
            cache.add(reply.key, {**row, "completion": reply.text, "prompt_tokens": reply.prompt_tokens,
                                  "completion_tokens": reply.completion_tokens, "seconds": round(reply.seconds, 3),
                                  "attempts": reply.attempts})
            self.stats["completed"] += 1
            self.stats["prompt_tokens"] += reply.prompt_tokens or 0
            self.stats["completion_tokens"] += reply.completion_tokens or 0
        elif reply.permanent:  # the same request would be refused again: recorded, never asked again
            cache.add(reply.key, {**row, "completion": None, "status": reply.status,
                                  "error": _one_line(str(reply.error), 300), "seconds": round(reply.seconds, 3),
                                  "attempts": reply.attempts})
            self.stats["failed_for_good"] += 1
        else:
            self.stats["failed"] += 1
            self.failed.append((row["id"], str(reply.error)))
            self.errors[str(reply.error).split(":")[0]] += 1


def _ask(teacher: Teacher, plan: _Plan, cache: AnnotationCache, dataset: str) -> tuple[_Run, list[Request]]:
    """Request every completion the cache lacks, persisting each as it arrives."""
    todo = [Request(k, plan.prompts[k]) for k in plan.where if cache.get(k) is None]
    hits = len(plan.where) - len(todo)
    run = _Run({"examples": len(plan.where), "cache_hits": hits, "requested": len(todo), "completed": 0, "failed": 0,
                "failed_for_good": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0})
    thash = content_hash(teacher.identity())
    bar = tqdm(total=len(plan.where), initial=hits, desc=f"annotate {dataset} ({teacher.name})", unit="ex", mininterval=1.0)
    try:
        for reply in teacher.generate(todo, stop_strings(dataset)):
            if reply.key not in plan.where or reply.key in run.answered:
                continue
            split, ex_id = plan.where[reply.key]
            run.record(reply, cache, {"dataset": dataset, "split": split, "id": ex_id, "teacher": thash})
            bar.update(1)
            bar.set_postfix(failed=run.stats["failed"] + run.stats["failed_for_good"], retries=run.stats["retries"],
                            refresh=False)
    finally:
        bar.close()
    return run, todo


def _write_corpus(plan: _Plan, cache: AnnotationCache, dataset: str, out_dir: str | Path) -> dict[str, Any]:
    """Parse every cached completion (and recorded failure: :func:`failed_record`) into the corpus; per-split stats."""
    splits: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        for split, rows in plan.examples.items():
            cached = [cache.get(k) for k in plan.keys[split]]
            records = [failed_record(ex, str(c["error"])) if is_failure(c)
                       else corpus_record(ex, str(c["completion"]).lstrip(), dataset) for ex, c in zip(rows, cached)]
            write_jsonl(tmp / f"{split}.jsonl", records)
            stats = summarise(records, get_spec(dataset).answer_type)
            stats["prompt_tokens"] = sum(c.get("prompt_tokens") or 0 for c in cached)
            stats["completion_tokens"] = sum(c.get("completion_tokens") or 0 for c in cached)
            stats["teacher_seconds"] = round(sum(c.get("seconds") or 0.0 for c in cached), 2)
            splits[split] = stats
    return splits


def annotate_live(teacher: Teacher, prepared_dir: str | Path, dataset: str, out_dir: str | Path,
                  cache_path: str | Path, max_examples: int | None = None,
                  max_failed_share: float = 0.01) -> dict[str, Any]:
    """Annotate every split of ``dataset`` with a live teacher, resuming from (and appending to) the cache.

    Raises :class:`AnnotationIncomplete` (after persisting every completion that arrived) when some
    requests failed in a way a rerun may cure, and :class:`TooManyFailedRequests` when more than
    ``max_failed_share`` of a split's requests failed for good; otherwise writes the corpus, leaving the
    examples that failed for good out like unparsed ones (counted in the summary and printed to stderr).
    """
    plan = _plan(teacher, prepared_dir, dataset, max_examples)
    started = time.monotonic()
    with AnnotationCache(cache_path) as cache:
        run, todo = _ask(teacher, plan, cache, dataset)
        missing = [plan.where[r.key][1] for r in todo if r.key not in run.answered]
        run.stats["seconds"] = round(time.monotonic() - started, 2)
        refused = _refused(plan, cache)
        counts = {split: (len(rows), len(plan.keys[split])) for split, rows in refused.items()}
        over = {split: c for split, c in counts.items() if c[0] > _limit(max_failed_share, c[1])}
        refused_note = _refused_note(refused, counts, bool(over), max_failed_share)
        if run.failed or missing:
            raise AnnotationIncomplete(_incomplete_message(dataset, run.stats, run.failed, missing, run.errors,
                                                           cache.path, refused_note))
        if over:
            raise TooManyFailedRequests(_too_many_message(dataset, refused, over, max_failed_share, cache.path))
        splits = _write_corpus(plan, cache, dataset, out_dir)
    ident = teacher.identity()
    summary: dict[str, Any] = {"dataset": dataset, "teacher": teacher.name, "teacher_settings": ident,
                               "teacher_hash": content_hash(ident), "splits": splits, "run": run.stats}
    if refused:  # the why of each split's failed_requests count, for the first few
        summary["failed_request_examples"] = [{"split": sp, "id": i, "error": e}
                                              for sp, rows in refused.items() for i, e in rows][:10]
        print(f"annotate {dataset}: warning: {refused_note}", file=sys.stderr)
    if max_examples is not None:
        summary["max_examples"] = max_examples
    if note := get_spec(dataset).pool_note:
        summary["note"] = note
    return summary


def _refused(plan: _Plan, cache: AnnotationCache) -> dict[str, list[tuple[str, str]]]:
    """Per split, in plan order, the (example id, error) of every request recorded as failed for good
    (in this run or an earlier one: the limit is on the corpus, not on one run)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for split, keys in plan.keys.items():
        rows = [cache.get(k) for k in keys]
        failed = [(plan.where[k][1], str(r["error"])) for k, r in zip(keys, rows) if r is not None and is_failure(r)]
        if failed:
            out[split] = failed
    return out


def _limit(share: float, n: int) -> int:
    """How many of ``n`` requests may fail for good (the epsilon keeps 0.29 * 100 from flooring to 28)."""
    return math.floor(share * n + 1e-9)


def _split_counts(counts: dict[str, tuple[int, int]], share: float) -> str:
    """``train: 1 of 3, limit 0; test: ...`` from split -> (failed for good, examples)."""
    return "; ".join(f"{split}: {k} of {n}, limit {_limit(share, n)}" for split, (k, n) in counts.items())


def _refused_note(refused: dict[str, list[tuple[str, str]]], counts: dict[str, tuple[int, int]], over: bool,
                  share: float) -> str:
    """One line on the requests that failed for good: how many, within the limit or not, the first reason."""
    if not refused:
        return ""
    split, (ex_id, err) = next((sp, rows[0]) for sp, rows in refused.items())
    fate = ("more than teacher.max_failed_share = {:g} allows" if over else
            "left out of the corpus like unparsed completions, within teacher.max_failed_share = {:g}").format(share)
    return (f"{sum(k for k, _ in counts.values())} request(s) failed for good (recorded in the cache, not asked "
            f"again), {fate} ({_split_counts(counts, share)}); first: {split}/{ex_id}: {_one_line(err, 300)}")


def _too_many_message(dataset: str, refused: dict[str, list[tuple[str, str]]], over: dict[str, tuple[int, int]],
                      share: float, cache_path: Path) -> str:
    """The one line that stops the stage when too many requests failed for good (a rerun would not help)."""
    split = next(iter(over))
    ex_id, err = refused[split][0]
    total = sum(k for k, _ in over.values())
    return (f"annotate {dataset}: {total} request(s) failed for good, more than teacher.max_failed_share = {share:g} "
            f"allows ({_split_counts(over, share)}); first: {split}/{ex_id}: {_one_line(err, 300)}. They are "
            f"recorded in {cache_path} and are not asked again: raise teacher.max_failed_share to write the corpus "
            "without them, or change what they send (delete their lines from that file to ask again).")


def _one_line(text: str, n: int) -> str:
    """``text`` on one line, at most ``n`` characters: server reasons go into one-line messages and the cache."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


def _incomplete_message(dataset: str, run: dict[str, Any], failed: list[tuple[str, str]], missing: list[str],
                        errors: Counter[str], cache_path: Path, refused_note: str = "") -> str:
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
    if refused_note:  # not cured by a rerun, so said apart from the rest
        lines.append(f"also: {refused_note}")
    return "\n".join(lines)
