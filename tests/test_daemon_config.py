"""Daemon configuration (flags over palyra.yaml) and the agent backends against local servers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from palyra_ops.backends import BackendError, ExecRequest, HttpBackend, OpenAIBackend, make_backend
from palyra_ops.config import BackendConfig, EnvRef, load_config, parse_listen
from palyra_ops.errors import PalyraError


def test_defaults() -> None:
    c = load_config(None)
    assert (c.host, c.port, c.listen, c.is_loopback) == ("127.0.0.1", 7142, "127.0.0.1:7142", True)
    assert c.backend.kind == "echo" and c.watch is False and c.dir == Path("routines.d")
    assert c.memory.maintenance_interval_ms == 300_000 and c.memory.backfill_interval_ms == 600_000
    assert c.skills.audit_interval_ms == 6 * 3_600_000


def test_file_values_and_flag_precedence(tmp_path) -> None:
    cfg = tmp_path / "deploy" / "palyra.yaml"
    cfg.parent.mkdir()
    cfg.write_text(
        "listen: 127.0.0.1:9000\njournal: state/j.sqlite3\ndir: routines\nwatch: true\n"
        "backend: {kind: openai, url: 'http://127.0.0.1:8080/v1', model: tiny, api_key: {env: OPENAI_KEY}}\n"
        "integrations: {github: {secret: {env: GH_SECRET}}}\n"
        "memory: {retention: {max_age: 30d, max_items: 1000}, intervals: {maintenance: 1m, backfill: 2m}}\n"
        "skills: {audit_interval: 1h}\n"
    )
    c = load_config(cfg, listen="127.0.0.1:9100")
    assert c.port == 9100  # the flag wins
    assert c.journal == cfg.parent / "state/j.sqlite3" and c.dir == cfg.parent / "routines"  # relative to the file
    assert c.watch is True and c.backend == BackendConfig("openai", "http://127.0.0.1:8080/v1", "tiny", EnvRef("OPENAI_KEY"))
    assert c.integrations["github"].secret == EnvRef("GH_SECRET")
    assert (c.memory.retention.max_age_ms, c.memory.retention.max_items) == (30 * 86_400_000, 1000)
    assert (c.memory.maintenance_interval_ms, c.memory.backfill_interval_ms) == (60_000, 120_000)
    assert c.skills.audit_interval_ms == 3_600_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus: 1\n", "palyra.yaml:1:8: bogus: unknown key; expected listen, journal, dir, watch, allow_remote, "),
        ("backend: {kind: magic}\n", "palyra.yaml:1:17: backend.kind: 'magic' is not one of echo, http, openai"),
        ("backend: {kind: http}\n", "palyra.yaml:1:17: backend.kind: backend kind http needs backend.url"),
        ("backend: {kind: openai, url: 'http://x', api_key: sk-123}\n",
         "backend.api_key: secrets are only accepted as {env: NAME} references, got the string 'sk-123'"),
        ("memory: {intervals: {backfill: soon}}\n", "memory.intervals.backfill: invalid duration 'soon'"),
        ("memory: {maintenance_interval: 1m}\n",
         "memory.maintenance_interval: unknown key; expected retention, intervals, batch, vacuum, embedder"),
        ("- a\n", "the config must be a mapping, got a list"),
        ("a: [\n", "palyra.yaml:2:1: invalid YAML: expected the node content"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, text: str, message: str) -> None:
    cfg = tmp_path / "palyra.yaml"
    cfg.write_text(text)
    with pytest.raises(PalyraError, match=None) as e:
        load_config(cfg)
    assert message in e.value.message


# -- every value type-checked (issue 9 point 5) -----------------------------------------------------------

BOOL_KEYS = ["allow_remote", "watch", "watcher.self_heal"]


def _nested(key: str, value: str) -> str:
    """`a.b.c` + value → `a: {b: {c: VALUE}}` in flow style, so the value sits on line 1."""
    parts = key.split(".")
    return "".join(f"{p}: {{" for p in parts[:-1]) + f"{parts[-1]}: {value}" + "}" * (len(parts) - 1) + "\n"


@pytest.mark.parametrize("key", BOOL_KEYS)
@pytest.mark.parametrize("value", ['"false"', "'no'", '"true"', "yes", "no", "on", "off", "0", "1", "[]", "null"])
def test_strings_are_never_booleans(tmp_path, key: str, value: str) -> None:
    """`allow_remote: "false"` used to be bool("false") == True: a daemon bound to 0.0.0.0."""
    cfg = tmp_path / "palyra.yaml"
    text = _nested(key, value)
    cfg.write_text(text)
    with pytest.raises(PalyraError) as e:
        load_config(cfg)
    col = text.index(value) + 1
    assert e.value.message.startswith(f"{cfg}:1:{col}: {key}: "), e.value.message
    assert "true or false" in e.value.message


@pytest.mark.parametrize("key", BOOL_KEYS)
def test_booleans_that_are_booleans(tmp_path, key: str) -> None:
    cfg = tmp_path / "palyra.yaml"
    for value, expected in (("true", True), ("false", False), ("True", True), ("FALSE", False)):
        cfg.write_text(_nested(key, value))
        c = load_config(cfg)
        got = {"allow_remote": c.allow_remote, "watch": c.watch, "watcher.self_heal": c.watcher.self_heal}[key]
        assert got is expected


def test_allow_remote_string_never_binds_everywhere(tmp_path) -> None:
    """The end-to-end consequence: the daemon refuses the config instead of listening on 0.0.0.0."""
    import subprocess
    import sys

    cfg = tmp_path / "palyra.yaml"
    cfg.write_text('listen: 0.0.0.0:0\nallow_remote: "false"\n')
    out = subprocess.run([sys.executable, "-m", "palyra_ops", "daemon", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=60, env={**__import__("os").environ, "PALYRA_STATE_ROOT": str(tmp_path / "s")})
    assert out.returncode == 1
    assert out.stderr == f"palyra-ops: {cfg}:2:15: allow_remote: expected true or false, got the string 'false'\n"
    assert not (tmp_path / "s").exists()  # refused before anything was created


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen: 7142\n", "1:9: listen: expected HOST:PORT, e.g. 127.0.0.1:7142, got the number 7142"),
        ("listen: 'h:x'\n", "1:9: listen 'h:x': port 'x' is not a number"),
        ("journal: 5\n", "1:10: journal: expected a path, got the number 5"),
        ("log_level: loud\n", "1:12: log_level: 'loud' is not one of debug, info, warning, error"),
        ("backend: {kind: echo, timeout: 60}\n", "1:32: backend.timeout: expected a duration such as 30s, 5m or 1h30m, got the number 60"),
        ("backend: {kind: http, url: ftp://x}\n", "1:28: backend.url: expected an http:// or https:// URL, got the string 'ftp://x'"),
        ("backend: [echo]\n", "1:10: backend: expected a mapping (with kind, url, model, api_key, timeout), got a list"),
        ("backend: {kind: echo, colour: red}\n", "1:31: backend.colour: unknown key; expected kind, url, model, api_key, timeout"),
        ("integrations: {github: {secret: {env: GH}, token: x}}\n", "1:51: integrations.github.token: unknown key; expected secret"),
        ("dispatch: {clients: '4'}\n", "1:21: dispatch.clients: expected an integer between 1 and 64, got the string '4'"),
        ("dispatch: {concurrency: 0}\n", "1:25: dispatch.concurrency: expected an integer between 1 and 1024, got 0"),
        ("dispatch: {clients: true}\n", "1:21: dispatch.clients: expected an integer between 1 and 64, got true"),
        ("memory: {batch: '64'}\n", "1:17: memory.batch: expected an integer between 1 and 2048, got the string '64'"),
        ("memory: {retention: {max_items: -1}}\n", "1:33: memory.retention.max_items: expected an integer >= 0, got -1"),
        ("memory: {vacuum: {min_free_ratio: '0.5'}}\n", "1:35: memory.vacuum.min_free_ratio: expected a number between 0 and 1, got the string '0.5'"),
        ("memory: {embedder: {kind: hashing, timeout_s: true}}\n", "1:47: memory.embedder.timeout_s: expected a number greater than 0, got true"),
        ("skills: {audit_interval: true}\n", "1:26: skills.audit_interval: expected a duration such as 30s, 5m or 1h30m (or 0 to turn it off), got true"),
        ("watcher: {debounce: 150}\n", "1:21: watcher.debounce: expected a duration such as 30s, 5m or 1h30m, got the number 150"),
        ("watcher: {rescan_interval: 0s}\n", "1:28: watcher.rescan_interval: must be at least 1ms, got '0s'"),
        ("watch: true\nwatch: false\n", "2:1: watch: duplicate key (first at line 1)"),
    ],
)
def test_every_value_is_type_checked(tmp_path, text: str, message: str) -> None:
    cfg = tmp_path / "palyra.yaml"
    cfg.write_text(text)
    with pytest.raises(PalyraError) as e:
        load_config(cfg)
    assert e.value.message == f"{cfg}:{message}"


def test_all_errors_are_reported_at_once(tmp_path) -> None:
    cfg = tmp_path / "palyra.yaml"
    cfg.write_text("watch: 'yes'\nbogus: 1\ndispatch:\n  clients: x\n")
    with pytest.raises(PalyraError) as e:
        load_config(cfg)
    assert [line.split(": ")[0:2] for line in e.value.message.splitlines()] == [
        [f"{cfg}:1:8", "watch"], [f"{cfg}:2:8", "bogus"], [f"{cfg}:4:12", "dispatch.clients"]]


def test_every_documented_key_is_checked_and_accepted() -> None:
    """The full example of docs/daemon.md loads, and every key in it has a line in config.KEYS."""
    import re as _re

    from palyra_ops import config

    doc = (Path(__file__).resolve().parent.parent / "docs" / "daemon.md").read_text()
    block = _re.search(r"## Configuration.*?```yaml\n(.*?)```", doc, _re.S)
    assert block is not None
    import yaml as _yaml

    data = _yaml.safe_load(block.group(1))
    config.build_config(data)

    def leaves(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and not (set(v) == {"env"}):
                out += leaves(v, key + ".")
            else:
                out.append(key)
        return out

    patterns = [tuple(k.split(".")) for k in config.KEYS]
    for key in leaves(data):
        parts = tuple(key.split("."))
        assert any(len(p) == len(parts) and all(a in ("*", b) for a, b in zip(p, parts, strict=True)) for p in patterns), key


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:7142", ("127.0.0.1", 7142)), ("[::1]:80", ("::1", 80)), ("localhost:0", ("localhost", 0))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("7142", "expected HOST:PORT"), ("h:x", "port 'x' is not a number"), ("h:70000", "out of range"),
     ("[::1]", "expected [IPV6]:PORT")],
)
def test_parse_listen_errors(text: str, message: str) -> None:
    with pytest.raises(PalyraError) as e:
        parse_listen(text)
    assert message in e.value.message


# -- backends against local servers -----------------------------------------------------------------


class Server:
    def __init__(self, reply: Any, delay: float = 0.0, status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("content-length") or 0)
                outer.requests.append(json.loads(self.rfile.read(n)))
                outer.headers.append(dict(self.headers))
                time.sleep(delay)
                body = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


REQ = ExecRequest(routine_id="r", run_id="01ARZ3NDEKTSV4RRFFQ69G5FAV", attempt=1, owner="user:alice",
                  channel="cli:alice", prompt="Summarize", trigger_kind="schedule", scheduled_at_ms=0,
                  trigger_payload=None)


async def _noop(ms: int) -> None:
    return None


def test_http_backend_posts_the_run_and_returns_the_body() -> None:
    srv = Server(b"the summary")

    async def main() -> None:
        b = HttpBackend(srv.url + "/run", timeout_ms=5000)
        out = await b.run(REQ, now_ms=0, sleep_until=_noop)
        await b.aclose()
        assert out == "the summary"
        assert srv.requests[0]["prompt"] == "Summarize"
        assert srv.requests[0]["trigger"] == {"kind": "schedule", "scheduled_at": "1970-01-01T00:00:00+00:00",
                                              "payload": None}

    try:
        asyncio.run(main())
    finally:
        srv.close()


def test_http_backend_errors_are_backend_errors() -> None:
    srv = Server(b"boom", status=500)
    slow = Server(b"late", delay=1.0)

    async def main() -> None:
        with pytest.raises(BackendError, match=r"answered 500: boom"):
            await HttpBackend(srv.url).run(REQ, now_ms=0, sleep_until=_noop)
        with pytest.raises(BackendError, match="timed out"):
            await HttpBackend(slow.url, timeout_ms=200).run(REQ, now_ms=0, sleep_until=_noop)

    try:
        asyncio.run(main())
    finally:
        srv.close()
        slow.close()


def test_openai_backend_speaks_chat_completions(monkeypatch) -> None:
    srv = Server({"choices": [{"message": {"role": "assistant", "content": "All quiet."}}]})
    monkeypatch.setenv("OPENAI_KEY", "sk-test")

    async def main() -> None:
        b = make_backend(BackendConfig("openai", srv.url + "/v1", "tiny", EnvRef("OPENAI_KEY")))
        assert isinstance(b, OpenAIBackend)
        out = await b.run(REQ, now_ms=0, sleep_until=_noop)
        await b.aclose()
        assert out == "All quiet."
        body = srv.requests[0]
        assert body["model"] == "tiny" and body["messages"][-1] == {"role": "user", "content": "Summarize"}
        assert srv.headers[0]["Authorization"] == "Bearer sk-test"

    try:
        asyncio.run(main())
    finally:
        srv.close()


def test_openai_backend_bad_shape() -> None:
    srv = Server({"nope": 1})

    async def main() -> None:
        with pytest.raises(BackendError, match="unexpected response shape"):
            await OpenAIBackend(srv.url, None, None).run(REQ, now_ms=0, sleep_until=_noop)

    try:
        asyncio.run(main())
    finally:
        srv.close()


def test_http_backend_slow_run_under_the_real_daemon(daemon_factory) -> None:
    """A slow `http` backend and concurrency `replace`: the daemon cancels the in-flight HTTP call."""
    srv = Server(b"done", delay=2.5)
    try:
        d = daemon_factory(config={"backend": {"kind": "http", "url": srv.url + "/agent"}})
        d.write("r.yaml", [{"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "slow-http"},
                            "spec": {"prompt": "p", "trigger": {"kind": "schedule", "schedule": {"every": "1s"}},
                                     "policies": {"concurrency": "replace"}}}])
        d.apply()
        d.wait_for(lambda: len([r for r in d.runs("slow-http") if r["status"] == "cancelled"]) >= 2, timeout=8,
                   what="replaced runs")
        rows = d.runs("slow-http")
        assert rows[0]["status"] == "cancelled" and rows[0]["reason"].startswith("replaced: superseded by run ")
        assert all(r["output"] is None for r in rows if r["status"] == "cancelled")
    finally:
        srv.close()
