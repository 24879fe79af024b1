"""A small client for OpenAI-compatible chat endpoints (``POST {base_url}/chat/completions``).

The ``openai`` package is the transport (``chat.completions`` on ``base_url``: OpenAI, vLLM, llama.cpp's
server ...), with its own retries off (``max_retries=0``): the loop here is the one that retries, because
every failed attempt must be recorded with its reason, a rate limit (and a server's ``Retry-After``) must
hold across worker threads, and an endpoint that is plainly down must stop being called (after
``max_consecutive_failures``) instead of costing ``retries x timeout`` per remaining item. The API key is
read from the environment variable the config names (never the SDK's ``$OPENAI_API_KEY`` fallback) and
only ever goes into the Authorization header, and only to an https or loopback base URL unless the
config says otherwise (``allow_insecure_key``).
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import openai
from tqdm.auto import tqdm

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the progress bar

TOKEN_LIMIT_PARAMS = ("auto", "max_tokens", "max_completion_tokens")
# OpenAI's reasoning families (o1, o3, o4-mini ...) and gpt-5 onwards reject max_tokens; older models and
# most other servers know only max_tokens. Matched on the name after any "provider/" prefix.
_COMPLETION_TOKENS_MODELS = re.compile(r"^(o\d|gpt-([5-9]|\d{2,}))", re.IGNORECASE)
_OMIT = openai.Omit()


class EndpointError(RuntimeError):
    """One request's final failure; ``kind`` says which (connect, timeout, http_<code>, bad_json...)."""

    def __init__(self, kind: str, detail: str, *, retry_after_s: float | None = None, attempts: int = 0):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.retry_after_s = retry_after_s  # what a 429/503 asked for (Retry-After), in seconds
        self.attempts = attempts  # requests made for this item, set by ChatClient.complete
        self.waits_s: list[float] = []  # Retry-After waits honoured before the failure


@dataclass
class ChatReply:
    text: str
    top_logprobs: list[dict] | None = None  # first token's alternatives [{token, logprob}], when asked
    attempts: int = 1
    waits_s: list[float] = field(default_factory=list)  # Retry-After waits honoured before this reply


@dataclass
class _Breaker:
    limit: int
    consecutive: int = 0
    open_reason: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, ok: bool, reason: str = "") -> None:
        with self.lock:
            self.consecutive = 0 if ok else self.consecutive + 1
            if not ok and self.limit and self.consecutive >= self.limit and self.open_reason is None:
                self.open_reason = f"{self.consecutive} consecutive failures, last: {reason}"


class RateLimiter:
    """At most ``per_minute`` request starts per minute, shared by all threads (0 = unlimited); ``hold``
    pauses every thread's next start (a server's Retry-After concerns the client, not one request)."""

    def __init__(self, per_minute: float):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.next_start = 0.0
        self.lock = threading.Lock()

    def hold(self, seconds: float) -> None:
        with self.lock:
            self.next_start = max(self.next_start, time.monotonic() + seconds)

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        time.sleep(max(0.0, start - now))


def api_key_from_env(var: str | None) -> str | None:
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


def check_key_destination(base_url: str, api_key_env: str | None, allow_insecure_key: bool = False) -> None:
    """Refuse, before any request, to send the key named by ``api_key_env`` in clear to another host."""
    if allow_insecure_key or not api_key_from_env(api_key_env) or key_transport_is_safe(base_url):
        return
    raise ValueError(
        f"judge.base_url={base_url} is neither https nor a loopback host, so the key in "
        f"${api_key_env} would travel in clear: use https, set judge.api_key_env=null (no key), "
        "or judge.allow_insecure_key=true"
    )


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (delay-seconds or HTTP-date, RFC 9110 10.2.3) as seconds from now; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when.tzinfo else None


def token_limit_param(model: str, setting: str = "auto") -> str:
    """The request field that caps the reply's length: ``setting`` unless auto, else by model family."""
    if setting not in TOKEN_LIMIT_PARAMS:
        raise ValueError(f"judge.token_limit_param='{setting}' is unknown. Allowed: {', '.join(TOKEN_LIMIT_PARAMS)}")
    if setting != "auto":
        return setting
    return "max_completion_tokens" if _COMPLETION_TOKENS_MODELS.match(model.rsplit("/", 1)[-1]) else "max_tokens"


class ChatClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        timeout_s: float = 60,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        requests_per_minute: float = 0,
        concurrency: int = 4,
        max_consecutive_failures: int = 20,
        allow_insecure_key: bool = False,
        max_retry_after_s: float = 60.0,
        token_limit: str = "auto",
    ):
        check_key_destination(base_url, api_key_env, allow_insecure_key)
        self.base_url, self.model = base_url.rstrip("/"), model
        self.max_retries, self.backoff_s, self.concurrency = max_retries, backoff_s, max(1, concurrency)
        self.max_retry_after_s = max_retry_after_s
        self.token_limit = token_limit_param(model, token_limit)
        key = api_key_from_env(api_key_env)
        # Without a key the SDK would fall back to $OPENAI_API_KEY and insist on some Authorization header:
        # a key provider that yields nothing, and the header left out of every request. Org and project ids
        # from the environment are not sent either; only what the config names travels.
        self.sdk = openai.OpenAI(
            base_url=self.base_url,
            api_key=key or (lambda: ""),
            max_retries=0,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            default_headers={"OpenAI-Organization": _OMIT, "OpenAI-Project": _OMIT},
        )
        self.extra_headers = {} if key else {"Authorization": _OMIT}
        self.limiter = RateLimiter(requests_per_minute)
        self.breaker = _Breaker(max_consecutive_failures)

    def close(self) -> None:
        self.sdk.close()

    def _once(self, request: dict) -> ChatReply:
        try:
            raw = self.sdk.chat.completions.with_raw_response.create(**request, extra_headers=self.extra_headers)
        except openai.APITimeoutError as err:
            cause = type(err.__cause__ or err).__name__
            raise EndpointError("timeout", f"no answer from {self.base_url} in time ({cause})") from err
        except openai.APIConnectionError as err:
            cause = err.__cause__ or err
            raise EndpointError("connect", f"{self.base_url} unreachable ({type(cause).__name__}: {cause})") from err
        except openai.APIStatusError as err:
            code = err.status_code
            wait = retry_after_seconds(err.response.headers.get("retry-after")) if code in (429, 503) else None
            raise EndpointError(f"http_{code}", err.response.text[:200], retry_after_s=wait) from err
        text = raw.http_response.text
        try:
            choice = raw.parse().choices[0]
            content = choice.message.content
        except (ValueError, AttributeError, IndexError, TypeError) as err:  # not JSON, or no choices
            raise EndpointError("bad_json", f"not a chat completion: {text[:200]!r}") from err
        if not isinstance(content, str):
            raise EndpointError("bad_json", f"message content is {type(content).__name__}, not text")
        top = None
        try:
            first = choice.logprobs.content[0] if choice.logprobs and choice.logprobs.content else None
            if first is not None and first.top_logprobs:
                top = [{"token": t.token, "logprob": t.logprob} for t in first.top_logprobs]
        except (AttributeError, IndexError, TypeError) as err:
            raise EndpointError("bad_json", f"malformed logprobs: {text[:200]!r}") from err
        return ChatReply(text=content, top_logprobs=top)

    @staticmethod
    def _retryable(err: EndpointError) -> bool:
        return err.kind in ("timeout", "connect", "http_429", "bad_json") or err.kind.startswith("http_5")

    def complete(
        self, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 256, top_logprobs: int = 0
    ) -> ChatReply:
        """One chat completion, retried with exponential backoff + jitter, or after the server's
        Retry-After (429/503, capped at ``max_retry_after_s``); raises EndpointError."""
        request = {"model": self.model, "messages": messages, "temperature": temperature, self.token_limit: max_tokens}
        if top_logprobs:
            request.update(logprobs=True, top_logprobs=top_logprobs)
        last: EndpointError | None = None
        waits: list[float] = []
        for attempt in range(self.max_retries + 1):
            if self.breaker.open_reason:
                raise EndpointError("endpoint_down", f"not called: {self.breaker.open_reason}", attempts=attempt)
            self.limiter.wait()
            try:
                reply = self._once(request)
                reply.attempts, reply.waits_s = attempt + 1, waits
                self.breaker.record(True)
                return reply
            except EndpointError as err:
                last, err.attempts, err.waits_s = err, attempt + 1, waits
                if not self._retryable(err) or attempt == self.max_retries:
                    break
                if err.retry_after_s is not None:
                    wait = min(err.retry_after_s, self.max_retry_after_s)
                    waits.append(round(wait, 3))
                    self.limiter.hold(wait)  # the next limiter.wait() sleeps it, in every thread
                else:
                    time.sleep(self.backoff_s * (2**attempt) * (0.5 + random.random()))
        self.breaker.record(False, str(last))
        raise last  # type: ignore[misc]

    def map(self, jobs: list, call, desc: str) -> list:
        """``call(job)`` for every job on ``concurrency`` threads, in order, with a progress bar."""
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(tqdm(pool.map(call, jobs), total=len(jobs), desc=desc, unit="req"))
