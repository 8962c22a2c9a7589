"""A teacher behind any OpenAI-compatible HTTP server.

vLLM, TGI, llama.cpp's server, Ollama, ``transformers serve`` and hosted APIs all speak
``POST <base_url>/completions`` (a raw prompt: best for few-shot chain-of-thought) and
``POST <base_url>/chat/completions`` (the prompt as one user message, for chat-only APIs).

Requests run on ``concurrency`` threads. A request that meets a connection error, a timeout, a 408,
409, 425, 429 or 5xx status (but 501/505), or a 200 whose body is not a completion, is retried up to
``retries`` times with exponential backoff (``backoff * 2**n`` seconds, at most ``backoff_max``, or the server's
``Retry-After`` when it says so); what still fails is reported as a failed :class:`Reply`. A 401, 403
or 404 cannot get better by waiting: it stops the run at once. Any other 4xx (400 for an over-long prompt,
413, 422...) is the server refusing that one request: it is not retried and comes back as a *permanent*
failed :class:`Reply` (status and the server's reason, shortened), which the caller records for good.

The API key is read from the environment variable *named* by ``api_key_env``; only that name is a
setting, so the key itself never reaches ``params.yaml``, ``dvc.lock``, the cache or any log (error
messages are scrubbed of it too).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx

from ..settings import HttpSettings
from .teacher import Reply, Request

RETRY_STATUS = frozenset({408, 409, 425, 429})  # and every 5xx but 501/505 (see _retryable)
# 404 stays fatal: it means a wrong base_url or model far more often than one bad prompt, and recording
# it per request would keep every example out of the corpus once the address is fixed.
FATAL_STATUS = frozenset({401, 403, 404})


class FatalTeacherError(RuntimeError):
    """The server refuses every request (bad key, unknown model or URL): retrying cannot help."""


class HttpTeacher:
    """Completions from an OpenAI-compatible server (see the module docstring)."""

    name = "http"

    def __init__(self, settings: HttpSettings):
        self.s = settings
        self._key = _read_key(settings.api_key_env)
        self._key_forms = _key_forms(self._key)
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._client = httpx.Client(
            base_url=settings.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(float(settings.timeout), connect=min(10.0, float(settings.timeout))),
            limits=httpx.Limits(max_connections=int(settings.concurrency)),
        )
        self._stop = threading.Event()
        self._tokenizer: Any = None
        self._tokenizer_lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        s = self.s
        ident = {"teacher": "http", "model": s.model, "endpoint": s.endpoint, "temperature": float(s.temperature),
                 "max_tokens": int(s.max_tokens)}
        for opt in ("system", "top_p", "seed"):  # only when set, so adding a new option redoes nothing
            if getattr(s, opt) is not None:
                ident[opt] = getattr(s, opt)
        return ident

    def _tokens(self, prompt: str, text: str, usage: dict[str, int]) -> tuple[int | None, int | None]:
        """The server's token counts; where it reports none, ``tokenizer``'s (None without one)."""
        counted = (usage.get("prompt_tokens"), usage.get("completion_tokens"))
        if None not in counted or self.s.tokenizer is None:
            return counted
        with self._tokenizer_lock:  # requests run in threads: load it once
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                from ..students.student import resolve_ref

                self._tokenizer = AutoTokenizer.from_pretrained(resolve_ref(self.s.tokenizer))
        tok = self._tokenizer
        return (counted[0] if counted[0] is not None else len(tok(prompt)["input_ids"]),
                counted[1] if counted[1] is not None else len(tok(text, add_special_tokens=False)["input_ids"]))

    # ----- one request -----

    def _body(self, prompt: str, stop: list[str]) -> tuple[str, dict[str, Any]]:
        s = self.s
        body: dict[str, Any] = {"max_tokens": int(s.max_tokens), "temperature": float(s.temperature)}
        if s.model is not None:
            body["model"] = s.model
        if stop:
            body["stop"] = list(stop)
        if s.top_p is not None:
            body["top_p"] = float(s.top_p)
        if s.seed is not None:
            body["seed"] = int(s.seed)
        if s.endpoint == "chat":
            messages = [{"role": "system", "content": s.system}] if s.system else []
            body["messages"] = messages + [{"role": "user", "content": prompt}]
            return "chat/completions", body
        body["prompt"] = prompt
        return "completions", body

    def scrub(self, text: str) -> str:
        """``text`` with the API key, in any spelling of it, replaced by ``***``."""
        for form in self._key_forms:
            text = text.replace(form, "***")
        return text

    def complete(self, request: Request, stop: list[str]) -> Reply:
        """One request with retries; never raises (except :class:`FatalTeacherError` on 401/403/404).

        Any other 4xx comes back at once as a permanent failure (see :func:`_permanent`)."""
        path, body = self._body(request.prompt, stop)
        start = time.monotonic()
        attempts = 0
        error = "not attempted"
        while attempts <= int(self.s.retries) and not self._stop.is_set():
            attempts += 1
            wait_s: float | None = None
            try:
                resp = self._post(path, body)
            except httpx.HTTPError as exc:  # connection refused/reset, timeouts, protocol errors
                error = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    parsed = _read_completion(resp, self.s.endpoint, self.scrub)
                    if isinstance(parsed, tuple):
                        text, usage = parsed
                        prompt_tokens, completion_tokens = self._tokens(request.prompt, text, usage)
                        return Reply(request.key, text, prompt_tokens, completion_tokens, time.monotonic() - start,
                                     attempts)
                    error = f"malformed response: {parsed}"
                else:
                    error = f"HTTP {resp.status_code}: {_short(self.scrub(_reason(resp)))}"
                    if resp.status_code in FATAL_STATUS:
                        raise FatalTeacherError(self.scrub(f"{error} from {resp.request.url}"))
                    if _permanent(resp.status_code):
                        return Reply(request.key, seconds=time.monotonic() - start, attempts=attempts,
                                     error=self.scrub(error), status=resp.status_code, permanent=True)
                    if not _retryable(resp.status_code):
                        break
                    wait_s = _retry_after(resp)
            if attempts <= int(self.s.retries):
                delay = float(self.s.backoff) * 2 ** (attempts - 1)
                delay = min(wait_s if wait_s is not None else delay, float(self.s.backoff_max))
                self._stop.wait(delay * (1 + 0.1 * random.random()))
        return Reply(request.key, seconds=time.monotonic() - start, attempts=attempts, error=self.scrub(error))

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST, with the whole answer read within ``timeout`` seconds: httpx bounds each read alone, so a
        server that trickles its answer a few bytes at a time would hold the request (and Ctrl-C) for as long
        as it likes. Cut off once the deadline has passed, or once the run is stopping."""
        deadline = time.monotonic() + float(self.s.timeout)
        with self._client.stream("POST", path, json=body) as resp:
            chunks = []
            for chunk in resp.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > deadline or self._stop.is_set():
                    raise httpx.ReadTimeout(f"the answer took longer than {float(self.s.timeout):g} s "
                                            "(teacher.http.timeout bounds the whole request)", request=resp.request)
        # the body as read (already decoded), without the headers that described its encoding on the wire
        headers = [(k, v) for k, v in resp.headers.items()
                   if k.lower() not in ("content-encoding", "transfer-encoding", "content-length")]
        return httpx.Response(resp.status_code, headers=headers, content=b"".join(chunks), request=resp.request)

    # ----- many requests -----

    def generate(self, requests: list[Request], stop: list[str]) -> Iterator[Reply]:
        """Run requests on ``concurrency`` threads, yielding exactly one reply per request as each finishes."""
        pending = list(reversed(requests))
        running: dict[Future[Reply], Request] = {}
        fatal = ""
        pool = ThreadPoolExecutor(max_workers=int(self.s.concurrency), thread_name_prefix="teacher")
        try:
            while pending or running:
                while pending and len(running) < int(self.s.concurrency) and not self._stop.is_set():
                    req = pending.pop()
                    running[pool.submit(self.complete, req, stop)] = req
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    req = running.pop(fut)
                    try:
                        yield fut.result()
                    except FatalTeacherError as exc:
                        self._stop.set()
                        fatal = str(exc)
                        yield Reply(req.key, error=f"fatal: {fatal}")
                if self._stop.is_set():  # a fatal error: what was not sent is reported, not dropped
                    while pending:
                        yield Reply(pending.pop().key, attempts=0, error=f"not sent: the server refused ({fatal})")
        finally:
            self._stop.set()  # an interrupted run stops retrying at once
            pool.shutdown(wait=True, cancel_futures=True)
            self._stop.clear()

    def close(self) -> None:
        self._client.close()


def _read_key(env_name: str | None) -> str | None:
    """The key in the variable named ``env_name``, without the white space around it.

    A key read from a CRLF ``.env`` file ends in ``\r``: the HTTP library would refuse that header and print
    it, escaped, where scrubbing the exact text misses it. So outer white space is stripped, and a key that
    still holds anything but printable ASCII is refused, naming the variable and never the value.
    """
    if not env_name:
        return None
    key = (os.environ.get(str(env_name)) or "").strip()
    if not key:
        raise ValueError(f"teacher.http.api_key_env names ${env_name}, which is not set in the environment")
    if not all(0x21 <= ord(c) <= 0x7E for c in key):
        raise ValueError(f"teacher.http.api_key_env: ${env_name} holds a space, a control or a non-ASCII character, "
                         "which an HTTP header cannot carry; fix the variable (its value is not shown)")
    return key


def _key_forms(key: str | None) -> tuple[str, ...]:
    """Every way an error message may spell the key: as text, and as Python writes it in str and bytes reprs."""
    if not key:
        return ()
    return tuple(sorted({key, repr(key)[1:-1], repr(key.encode())[2:-1]}, key=len, reverse=True))


def _read_completion(resp: httpx.Response, endpoint: str, scrub) -> tuple[str, dict[str, Any]] | str:
    """``(text, usage)`` from an OpenAI-style response, or the reason it is not one (scrubbed, then shortened)."""
    try:
        data = resp.json()
    except ValueError:
        return f"not JSON: {_short(scrub(resp.text))}"
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if endpoint == "chat" else choice["text"]
    except (KeyError, IndexError, TypeError):
        return f"no choices[0].{'message.content' if endpoint == 'chat' else 'text'}: {_short(scrub(resp.text))}"
    if not isinstance(text, str):
        return f"completion is {type(text).__name__}, not text"
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return text, {k: v for k, v in usage.items() if isinstance(v, int)}


def _reason(resp: httpx.Response) -> str:
    """The server's reason for an error status: the message of an OpenAI-style JSON error body
    (``{"error": {"message": ...}}``, vLLM's ``{"message": ...}``, FastAPI's ``{"detail": ...}``), else the body."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text
    inner = data.get("error") if isinstance(data, dict) else None
    for holder in (inner, data):
        if isinstance(holder, dict):
            for field in ("message", "detail"):
                if isinstance(holder.get(field), str) and holder[field].strip():
                    return holder[field]
    return inner if isinstance(inner, str) and inner.strip() else resp.text


def _retryable(status: int) -> bool:
    return status in RETRY_STATUS or (500 <= status < 600 and status not in (501, 505))


def _permanent(status: int) -> bool:
    """A 4xx that refuses this request itself: neither fatal for the whole run nor worth retrying."""
    return 400 <= status < 500 and status not in FATAL_STATUS and not _retryable(status)


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _short(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."
