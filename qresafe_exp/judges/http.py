"""A small client for OpenAI-compatible chat endpoints (``POST {base_url}/chat/completions``).

Why our own loop around httpx and not an SDK's built-in retries: every failed attempt must be
recorded with its reason, a rate limit must hold across worker threads, and an endpoint that is
plainly down must stop being called (after ``max_consecutive_failures``) instead of costing
``retries x timeout`` per remaining item. The API key is read from the environment variable the
config names and only ever goes into the Authorization header, and only to an https or loopback
base URL unless the config says otherwise (``allow_insecure_key``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

import httpx
from tqdm.auto import tqdm

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the progress bar


class EndpointError(RuntimeError):
    """One request's final failure; ``kind`` says which (connect, timeout, http_<code>, bad_json...)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass
class ChatReply:
    text: str
    top_logprobs: Optional[list[dict]] = None  # first token's alternatives [{token, logprob}], when asked
    attempts: int = 1


@dataclass
class _Breaker:
    limit: int
    consecutive: int = 0
    open_reason: Optional[str] = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, ok: bool, reason: str = "") -> None:
        with self.lock:
            self.consecutive = 0 if ok else self.consecutive + 1
            if not ok and self.limit and self.consecutive >= self.limit and self.open_reason is None:
                self.open_reason = f"{self.consecutive} consecutive failures, last: {reason}"


class RateLimiter:
    """At most ``per_minute`` request starts per minute, shared by all threads (0 = unlimited)."""

    def __init__(self, per_minute: float):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        time.sleep(max(0.0, start - now))


def api_key_from_env(var: Optional[str]) -> Optional[str]:
    return os.environ.get(var) if var else None


def key_transport_is_safe(base_url: str) -> bool:
    """Whether a bearer key may travel to ``base_url``: over https, or to this machine (loopback)."""
    url = httpx.URL(base_url)
    if url.scheme == "https":
        return True
    host = url.host.lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback  # 127.0.0.0/8, ::1
    except ValueError:
        return False


def check_key_destination(base_url: str, api_key_env: Optional[str], allow_insecure_key: bool = False) -> None:
    """Refuse, before any request, to send the key named by ``api_key_env`` in clear to another host."""
    if allow_insecure_key or not api_key_from_env(api_key_env) or key_transport_is_safe(base_url):
        return
    raise ValueError(f"judge.base_url={base_url} is neither https nor a loopback host, so the key in "
                     f"${api_key_env} would travel in clear: use https, set judge.api_key_env=null (no key), "
                     "or judge.allow_insecure_key=true")


class ChatClient:
    def __init__(self, base_url: str, model: str, *, api_key_env: Optional[str] = None, timeout_s: float = 60,
                 max_retries: int = 3, backoff_s: float = 1.0, requests_per_minute: float = 0,
                 concurrency: int = 4, max_consecutive_failures: int = 20, allow_insecure_key: bool = False):
        check_key_destination(base_url, api_key_env, allow_insecure_key)
        self.base_url, self.model = base_url.rstrip("/"), model
        self.max_retries, self.backoff_s, self.concurrency = max_retries, backoff_s, max(1, concurrency)
        key = api_key_from_env(api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)), headers=headers)
        self.limiter = RateLimiter(requests_per_minute)
        self.breaker = _Breaker(max_consecutive_failures)

    def close(self) -> None:
        self.http.close()

    def _once(self, body: dict) -> ChatReply:
        try:
            response = self.http.post(f"{self.base_url}/chat/completions", json=body)
        except httpx.TimeoutException as err:
            raise EndpointError("timeout", f"no answer from {self.base_url} in time ({type(err).__name__})") from err
        except httpx.TransportError as err:
            raise EndpointError("connect", f"{self.base_url} unreachable ({type(err).__name__}: {err})") from err
        if response.status_code != 200:
            raise EndpointError(f"http_{response.status_code}", response.text[:200])
        try:
            choice = response.json()["choices"][0]
            text = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise EndpointError("bad_json", f"not a chat completion: {response.text[:200]!r}") from err
        if not isinstance(text, str):
            raise EndpointError("bad_json", f"message content is {type(text).__name__}, not text")
        top = None
        content = (choice.get("logprobs") or {}).get("content") or []
        if content and content[0].get("top_logprobs"):
            top = [{"token": t["token"], "logprob": t["logprob"]} for t in content[0]["top_logprobs"]]
        return ChatReply(text=text, top_logprobs=top)

    @staticmethod
    def _retryable(err: EndpointError) -> bool:
        return err.kind in ("timeout", "connect", "http_429", "bad_json") or err.kind.startswith("http_5")

    def complete(self, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 256,
                 top_logprobs: int = 0) -> ChatReply:
        """One chat completion, retried with exponential backoff + jitter; raises EndpointError."""
        body = {"model": self.model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
        if top_logprobs:
            body.update(logprobs=True, top_logprobs=top_logprobs)
        last: Optional[EndpointError] = None
        for attempt in range(self.max_retries + 1):
            if self.breaker.open_reason:
                raise EndpointError("endpoint_down", f"not called: {self.breaker.open_reason}")
            self.limiter.wait()
            try:
                reply = self._once(body)
                reply.attempts = attempt + 1
                self.breaker.record(True)
                return reply
            except EndpointError as err:
                last = err
                if not self._retryable(err) or attempt == self.max_retries:
                    break
                time.sleep(self.backoff_s * (2 ** attempt) * (0.5 + random.random()))
        self.breaker.record(False, str(last))
        raise last  # type: ignore[misc]

    def map(self, jobs: list, call, desc: str) -> list:
        """``call(job)`` for every job on ``concurrency`` threads, in order, with a progress bar."""
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(tqdm(pool.map(call, jobs), total=len(jobs), desc=desc, unit="req"))
