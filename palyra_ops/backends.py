"""Agent backends: what executes a routine's `prompt` when it has no skill (SPEC §5).

`echo` is the offline default so a fresh install runs end to end with no model; `http` hands the run
to any service that answers with text; `openai` speaks the chat-completions protocol, which local
model servers (llama.cpp, vLLM, Ollama) also implement. Backends raise `BackendError` with a
one-line reason that ends up on the run record; anything else is a bug.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from palyra_ops.clock import rfc3339
from palyra_ops.config import BackendConfig
from palyra_ops.durations import parse_duration_ms
from palyra_ops.errors import PalyraError

#: labels the echo backend honours, so tests and demos can make a run slow or failing without a
#: model server; they have no effect on the other backends
ECHO_SLEEP_LABEL = "echo-sleep"
ECHO_FAIL_LABEL = "echo-fail"


class BackendError(Exception):
    """An execution failure with a reason fit for the run record."""


@dataclass(frozen=True)
class ExecRequest:
    routine_id: str
    run_id: str
    attempt: int
    owner: str
    channel: str
    prompt: str
    trigger_kind: str
    scheduled_at_ms: int | None
    trigger_payload: Any
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "routine_id": self.routine_id,
            "run_id": self.run_id,
            "attempt": self.attempt,
            "owner": self.owner,
            "channel": self.channel,
            "prompt": self.prompt,
            "trigger": {
                "kind": self.trigger_kind,
                "scheduled_at": rfc3339(self.scheduled_at_ms),
                "payload": self.trigger_payload,
            },
        }


SleepUntil = Callable[[int], Awaitable[None]]


class Backend(Protocol):
    async def run(self, req: ExecRequest, *, now_ms: int, sleep_until: SleepUntil) -> str: ...

    async def aclose(self) -> None: ...


class EchoBackend:
    async def run(self, req: ExecRequest, *, now_ms: int, sleep_until: SleepUntil) -> str:
        pause = req.labels.get(ECHO_SLEEP_LABEL)
        if pause:
            try:
                await sleep_until(now_ms + parse_duration_ms(pause))
            except ValueError as exc:
                raise BackendError(f"label {ECHO_SLEEP_LABEL}: {exc}") from None
        fail = req.labels.get(ECHO_FAIL_LABEL)
        if fail == "always" or (fail and fail.isascii() and fail.isdigit() and len(fail) <= 9 and req.attempt <= int(fail)):
            raise BackendError(f"echo backend: failing as asked by label {ECHO_FAIL_LABEL}={fail}")
        context = [f"trigger={req.trigger_kind}"]
        if req.scheduled_at_ms is not None:
            context.append(f"scheduled_at={rfc3339(req.scheduled_at_ms)}")
        if req.trigger_payload not in (None, {}, []):
            context.append("payload=" + json.dumps(req.trigger_payload, sort_keys=True, separators=(",", ":")))
        return f"{req.prompt} [{' '.join(context)}]"

    async def aclose(self) -> None:
        return None


class HttpBackend:
    """POST the run as JSON; a 2xx response body is the output."""

    def __init__(self, url: str, timeout_ms: int = 60_000) -> None:
        self.url = url
        self.client = httpx.AsyncClient(timeout=timeout_ms / 1000)

    async def run(self, req: ExecRequest, *, now_ms: int, sleep_until: SleepUntil) -> str:
        try:
            resp = await self.client.post(self.url, json=req.to_json())
        except httpx.TimeoutException:
            raise BackendError(f"http backend: {self.url} timed out") from None
        except httpx.HTTPError as exc:
            raise BackendError(f"http backend: {self.url}: {exc}") from None
        if resp.status_code >= 300:
            raise BackendError(f"http backend: {self.url} answered {resp.status_code}: {resp.text[:200]}")
        return resp.text

    async def aclose(self) -> None:
        await self.client.aclose()


class OpenAIBackend:
    """Any chat-completions compatible endpoint; `url` is the API base (…/v1)."""

    def __init__(self, url: str, model: str | None, api_key: str | None, timeout_ms: int = 60_000) -> None:
        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model or "default"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(timeout=timeout_ms / 1000, headers=headers)

    async def run(self, req: ExecRequest, *, now_ms: int, sleep_until: SleepUntil) -> str:
        trig = req.to_json()["trigger"]
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": f"You run the routine {req.routine_id!r} for {req.owner}. "
                                              f"Trigger: {json.dumps(trig, sort_keys=True)}"},
                {"role": "user", "content": req.prompt},
            ],
        }
        try:
            resp = await self.client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise BackendError(f"openai backend: {self.url}: {exc or type(exc).__name__}") from None
        if resp.status_code >= 300:
            raise BackendError(f"openai backend: {self.url} answered {resp.status_code}: {resp.text[:200]}")
        try:
            return str(resp.json()["choices"][0]["message"]["content"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise BackendError(f"openai backend: unexpected response shape: {resp.text[:200]}") from None

    async def aclose(self) -> None:
        await self.client.aclose()


def make_backend(conf: BackendConfig) -> Backend:
    if conf.kind == "echo":
        return EchoBackend()
    if conf.kind == "http":
        assert conf.url
        return HttpBackend(conf.url, conf.timeout_ms)
    if conf.kind == "openai":
        assert conf.url
        key = conf.api_key.resolve("backend.api_key") if conf.api_key else None
        return OpenAIBackend(conf.url, conf.model, key, conf.timeout_ms)
    raise PalyraError(f"unknown backend kind {conf.kind!r}")
