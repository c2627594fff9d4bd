"""The OpenAI-compatible embedder against a real HTTP server on loopback (no mocks)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from palyra_ops.clock import FakeClock
from palyra_ops.errors import PalyraError
from palyra_ops.memory import EmbedderSpec, HashingEmbedder, MemoryService, OpenAIEmbedder

T0 = 1_767_225_600_000


class FakeEmbeddingsServer:
    """A tiny `/v1/embeddings` server; vectors come from a 64-d hashing embedder (unnormalised x3)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.fail_next: list[int] = []  # status codes to answer before succeeding
        self.ok_budget: int | None = None  # successful answers left before every request gets 400
        self.dim = 64
        self._emb = HashingEmbedder(64)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.auth.append(self.headers.get("Authorization"))
                if self.path != "/v1/embeddings":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if server.fail_next:
                    code = server.fail_next.pop(0)
                    return self._send(code, {"error": {"message": f"synthetic {code}"}}, {"Retry-After": "0"})
                if server.ok_budget is not None:
                    if server.ok_budget <= 0:
                        return self._send(400, {"error": {"message": "quota exhausted"}})
                    server.ok_budget -= 1
                texts = body["input"]
                vecs = server._emb.embed(texts)[:, : server.dim] * 3.0
                data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vecs)]
                data.reverse()  # the client must order by index, not position
                self._send(200, {"object": "list", "data": data, "model": body["model"]})

            def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeEmbeddingsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[FakeEmbeddingsServer]:
    with FakeEmbeddingsServer() as s:
        yield s


def test_embeds_in_order_normalised_with_auth(server: FakeEmbeddingsServer, monkeypatch) -> None:
    monkeypatch.setenv("TEST_EMBED_KEY", "sk-test")
    emb = OpenAIEmbedder(model="mini-embed", base_url=server.url, dim=64, api_key_env="TEST_EMBED_KEY")
    vecs = emb.embed(["disk full", "cert expiry", "disk full"])
    assert vecs.shape == (3, 64)
    assert abs(float(vecs[0] @ vecs[0]) - 1.0) < 1e-5
    assert float(vecs[0] @ vecs[2]) > 0.999 and float(vecs[0] @ vecs[1]) < 0.5
    assert server.requests[-1] == {"model": "mini-embed", "input": ["disk full", "cert expiry", "disk full"],
                                   "encoding_format": "float"}
    assert server.auth == ["Bearer sk-test"]
    assert emb.key.to_json() == {"model": "mini-embed", "dim": 64, "version": "1"}


def test_dimension_is_probed_when_not_configured(server: FakeEmbeddingsServer) -> None:
    emb = OpenAIEmbedder(model="m", base_url=server.url, api_key_env=None)
    assert emb.key.dim == 64
    assert server.requests[0]["input"] == ["dimension probe"] and server.auth == [None]


def test_retries_transient_errors(server: FakeEmbeddingsServer) -> None:
    server.fail_next = [503, 429]
    emb = OpenAIEmbedder(model="m", base_url=server.url, dim=64, max_retries=2)
    assert emb.embed(["x"]).shape == (1, 64)
    assert emb.requests == 3


def test_errors_are_clear(server: FakeEmbeddingsServer) -> None:
    server.fail_next = [500, 500, 500]
    emb = OpenAIEmbedder(model="m", base_url=server.url, dim=64, max_retries=2)
    with pytest.raises(PalyraError) as exc:
        emb.embed(["x"])
    assert exc.value.message == f"embedding endpoint {server.url}/embeddings answered HTTP 500: synthetic 500"

    wrong = OpenAIEmbedder(model="m", base_url=server.url.removesuffix("/v1"), dim=64)
    with pytest.raises(PalyraError, match=r"answered HTTP 404: no route /embeddings"):
        wrong.embed(["x"])

    bad_dim = OpenAIEmbedder(model="m", base_url=server.url, dim=32)
    with pytest.raises(PalyraError) as exc:
        bad_dim.embed(["x"])
    assert exc.value.message == (
        f"embedding endpoint {server.url} returned 64 dimensions for model 'm', expected 32"
    )

    down = OpenAIEmbedder(model="m", base_url="http://127.0.0.1:9/v1", dim=8, max_retries=0, timeout_s=2)
    with pytest.raises(PalyraError, match=r"^embedding endpoint http://127.0.0.1:9/v1/embeddings unreachable: "):
        down.embed(["x"])


def test_backfill_and_search_through_the_endpoint(server: FakeEmbeddingsServer, tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    spec = EmbedderSpec(kind="openai", model="mini-embed", base_url=server.url, dim=64, api_key_env=None)
    svc = MemoryService(path, spec, FakeClock(T0))
    ids = [svc.add_item(f"note {i} about {'disk' if i % 2 else 'certificates'}").id for i in range(100)]
    res = svc.backfill()
    assert res.error is None and res.embedded == 100 and res.batches == 2
    assert [len(r["input"]) for r in server.requests] == [64, 36]
    hit = svc.search("note 17 about disk", k=1).hits[0]
    assert hit.item.id == ids[17] and hit.item.embedding["model"] == "mini-embed"
    svc.close()
    # the CLI later finds the same embedder remembered in the journal
    again = MemoryService(path, None, FakeClock(T0))
    assert isinstance(again.embedder, OpenAIEmbedder) and again.embedder.key == spec.build().key


def test_backfill_reports_endpoint_failure_and_keeps_progress(server: FakeEmbeddingsServer, tmp_path: Path) -> None:
    emb = OpenAIEmbedder(model="m", base_url=server.url, dim=64, max_retries=0)
    svc = MemoryService(tmp_path / "journal.sqlite3", emb, FakeClock(T0))
    for i in range(100):
        svc.add_item(f"item {i}")
    server.ok_budget = 1
    res = svc.backfill()
    assert res.embedded == 64 and res.batches == 1 and res.pending_after == 36
    assert res.error == f"embedding endpoint {server.url}/embeddings answered HTTP 400: quota exhausted"
    assert res.index_count == 64 and res.index_saved
    server.ok_budget = None
    assert svc.backfill().embedded == 36


def test_the_daemon_backfills_with_its_configured_embedder(server: FakeEmbeddingsServer, daemon_factory) -> None:
    """Issue 9 point 17: the backfill child used the embedder the journal remembered (the hashing
    default), so with `memory.embedder` pointing at a real endpoint nothing was ever searchable.
    Items embedded by another embedder (here: hashing, remembered by the journal) are re-embedded
    with the configured one; the index is rebuilt for it."""
    embedder = {"kind": "openai", "model": "mini-embed", "base_url": server.url, "dim": 64, "api_key_env": None}
    d = daemon_factory(config={"memory": {"intervals": {"backfill": "1s"}, "embedder": embedder}})
    old = MemoryService(d.paths.journal, EmbedderSpec(), FakeClock(T0))  # another embedder, remembered
    before = old.add_item("payments certificate expires in 3 days").id
    assert old.backfill().embedded == 1 and old.get(before).embedding["model"] == "palyra-hashing-ngram"
    old.close()
    c = d.client()
    r = c.post("/console/v1/memory/items", json={"text": "disk usage on the build runners is at 91 percent"})
    assert r.status_code == 201, r.text
    added = r.json()["id"]

    def searched() -> dict | None:
        body = c.get("/console/v1/memory/search", params={"q": "build runners disk", "k": 2}).json()
        return body if body["pending"] == 0 and len(body["results"]) == 2 else None

    body = d.wait_for(searched, timeout=40, what="backfill with the configured embedder")
    assert body["model"] == {"model": "mini-embed", "dim": 64, "version": "1"}
    assert [hit["id"] for hit in body["results"]] == [added, before]
    assert all(hit["embedding"]["model"] == "mini-embed" for hit in body["results"])
    embedded = [t for req in server.requests for t in req["input"]]
    assert "disk usage on the build runners is at 91 percent" in embedded
    assert "payments certificate expires in 3 days" in embedded  # re-embedded, not kept from hashing
    # and the CLI's `memory search` now finds the same embedder remembered in the journal
    again = MemoryService(d.paths.journal, None, FakeClock(T0), create=False)
    assert isinstance(again.embedder, OpenAIEmbedder) and again.embedder.key.model == "mini-embed"
    again.close()
