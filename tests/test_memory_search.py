"""Search over a small fixed corpus with known answers, filters, the exact fallback, and the CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from palyra_ops.cli import main
from palyra_ops.clock import FakeClock, rfc3339
from palyra_ops.errors import PalyraError
from palyra_ops.memory import HashingEmbedder, MemoryService

T0 = 1_767_225_600_000
HOUR = 3_600_000

CORPUS = [
    # (routine, text)
    ("sre-digest", "Deploy of payments-api failed: readiness probe timed out on 3 pods"),
    ("sre-digest", "Disk usage on db-primary reached 91%, vacuum scheduled"),
    ("sre-digest", "TLS certificate for api.example.com expires in 6 days"),
    ("cost-report", "Monthly cloud spend rose 12% driven by GPU instances"),
    ("cost-report", "Unused EBS volumes cost 340 USD last month"),
    ("standup", "Alice is blocked on the database migration review"),
    ("standup", "Bob finished the Kubernetes upgrade on staging"),
    ("sre-digest", "DNS resolution errors for internal services between 02:00 and 02:15"),
    ("cost-report", "Reserved instance coverage dropped to 61%"),
    ("standup", "Carol is on call this week; escalations go to her"),
]

#: query -> index in CORPUS of the item that must come first
KNOWN = {
    "payments deploy failed": 0,
    "disk usage database": 1,
    "certificate expiry": 2,
    "GPU spend": 3,
    "unused volumes": 4,
    "database migration blocked": 5,
    "kubernetes upgrade": 6,
    "DNS errors": 7,
    "reserved instances": 8,
    "who is on call": 9,
    # typos and word forms: what 3-grams are for
    "certficate expirs": 2,
    "deployment failure payments": 0,
}


@pytest.fixture()
def corpus(tmp_path: Path) -> tuple[MemoryService, list[str]]:
    clock = FakeClock(T0)
    svc = MemoryService(tmp_path / "journal.sqlite3", HashingEmbedder(), clock)
    ids = []
    for i, (routine, text) in enumerate(CORPUS):
        ids.append(svc.add_item(text, routine_id=routine, run_id=f"run-{i}", source="delivery:local_only").id)
        clock.advance(HOUR)
    assert svc.backfill().embedded == len(CORPUS)
    return svc, ids


@pytest.mark.parametrize("query", sorted(KNOWN))
def test_known_answers_come_first(corpus: tuple[MemoryService, list[str]], query: str) -> None:
    svc, ids = corpus
    res = svc.search(query, k=3)
    assert res.method == "hnsw"
    assert res.hits[0].item.id == ids[KNOWN[query]], [h.item.text for h in res.hits]
    assert res.hits[0].item.run_id == f"run-{KNOWN[query]}"
    scores = [h.score for h in res.hits]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1.0 + 1e-6


def test_hnsw_and_exact_agree_on_the_corpus(corpus: tuple[MemoryService, list[str]]) -> None:
    svc, _ = corpus
    key = svc.embedder.key
    for query in KNOWN:
        ann = svc.search(query, k=10)
        exact = svc._exact(key, svc.embedder.embed([query])[0], 10, None)
        assert [h.item.id for h in ann.hits][:3] == [svc.store.rows_by_labels([lb])[lb].id for lb, _ in exact][:3]


def test_filters_by_routine_and_time(corpus: tuple[MemoryService, list[str]]) -> None:
    svc, ids = corpus
    res = svc.search("deploy failed", k=10, routine_id="standup")
    assert {h.item.routine_id for h in res.hits} == {"standup"} and len(res.hits) == 3
    assert res.method == "exact"  # small filtered sets are answered exactly
    res = svc.search("deploy failed", k=10, since_ms=T0 + 5 * HOUR, until_ms=T0 + 8 * HOUR)
    assert sorted(h.item.id for h in res.hits) == sorted(ids[5:8])
    assert svc.search("deploy", routine_id="nobody").hits == []


def test_filtered_search_through_the_index(corpus: tuple[MemoryService, list[str]], monkeypatch) -> None:
    import palyra_ops.memory.service as service

    monkeypatch.setattr(service, "EXACT_FILTER_LIMIT", 0)  # force the hnswlib filter path
    svc, ids = corpus
    res = svc.search("on call escalations", k=2, routine_id="standup")
    assert res.method == "hnsw"
    assert res.hits[0].item.id == ids[9] and {h.item.routine_id for h in res.hits} == {"standup"}


def test_k_larger_than_corpus_returns_everything(corpus: tuple[MemoryService, list[str]]) -> None:
    svc, ids = corpus
    res = svc.search("anything", k=50)
    assert sorted(h.item.id for h in res.hits) == sorted(ids)


def test_bad_queries(corpus: tuple[MemoryService, list[str]]) -> None:
    svc, _ = corpus
    with pytest.raises(PalyraError, match="search text must not be empty"):
        svc.search("   ")
    with pytest.raises(PalyraError, match="k must be between 1 and 1000"):
        svc.search("x", k=0)


def test_pending_items_are_reported(corpus: tuple[MemoryService, list[str]]) -> None:
    svc, _ = corpus
    svc.add_item("not embedded yet")
    res = svc.search("embedded")
    assert res.pending == 1
    assert res.notes == ["1 item(s) not embedded with palyra-hashing-ngram yet; run backfill"]


def test_hashing_embedder_properties() -> None:
    emb = HashingEmbedder()
    a, b, c = emb.embed(["Disk usage high", "disk USAGE high!", "cat on a mat"])
    assert np.isclose(np.linalg.norm(a), 1.0) and np.allclose(a, b)
    assert float(a @ b) > 0.99 and float(a @ c) < 0.3
    # stable across processes and machines: pinned value of one bucket
    assert HashingEmbedder().embed(["hello"]).tobytes() == emb.embed(["hello"]).tobytes()
    assert np.isclose(np.linalg.norm(emb.embed(["!!!"])[0]), 1.0)


# -- CLI ------------------------------------------------------------------------------------


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_round_trip(tmp_path: Path, capsys) -> None:
    j = str(tmp_path / "journal.sqlite3")
    code, out, err = _cli(capsys, "memory", "search", "x", "--journal", j)
    assert code == 1 and err == f"palyra-ops: no journal at {j} (run `palyra-ops apply` or pass --journal)\n"
    code, out, _ = _cli(capsys, "memory", "add", "Disk usage on db-primary reached 91%", "--routine", "sre",
                        "--journal", j, "-o", "json")
    assert code == 0
    item = json.loads(out)
    assert item["routine_id"] == "sre" and item["source"] == "cli" and item["embedding"] is None
    _cli(capsys, "memory", "add", "Cat pictures", "--ttl", "1h", "--journal", j)
    code, out, _ = _cli(capsys, "memory", "backfill", "--journal", j, "-o", "json")
    assert code == 0 and json.loads(out)["embedded"] == 2
    code, out, _ = _cli(capsys, "memory", "search", "disk usage", "-k", "1", "--journal", j, "-o", "json")
    body = json.loads(out)
    assert code == 0 and body["method"] == "hnsw"
    assert [r["id"] for r in body["results"]] == [item["id"]]
    assert body["results"][0]["routine_id"] == "sre" and body["results"][0]["created_at"] == item["created_at"]
    code, out, _ = _cli(capsys, "memory", "search", "disk usage", "-k", "1", "--journal", j)
    assert code == 0 and out.split()[1] == item["id"] and "routine=sre" in out
    code, out, _ = _cli(capsys, "memory", "list", "--journal", j, "--routine", "sre", "-o", "json")
    assert [i["id"] for i in json.loads(out)["items"]] == [item["id"]]
    code, out, _ = _cli(capsys, "memory", "stats", "--journal", j, "-o", "json")
    stats = json.loads(out)
    assert (stats["items"], stats["embedded"], stats["pending"], stats["index"]["count"]) == (2, 2, 0, 2)
    code, out, _ = _cli(capsys, "memory", "vacuum", "--max-items", "1", "--journal", j, "-o", "json")
    assert code == 0 and json.loads(out)["deleted_max_items"] == 1
    code, out, _ = _cli(capsys, "memory", "delete", item["id"], "nope", "--journal", j)
    assert (code, out) == (1, "deleted 0 item(s)\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["memory", "add", "x", "--ttl", "soon"], "palyra-ops: --ttl: invalid duration 'soon': expected e.g. 500ms, "
         "30s, 5m, 2h, 1d or 1h30m\n"),
        (["memory", "list", "--since", "yesterday"], "palyra-ops: --since: 'yesterday' is neither an RFC 3339 "
         "instant with offset nor a duration like 24h\n"),
        (["memory", "vacuum", "--max-bytes", "big"], "palyra-ops: invalid size 'big': expected bytes or e.g. "
         "512KiB, 256MB, 1GiB\n"),
        (["memory", "search", "x", "--embed-model", "m"], "palyra-ops: --embed-model/--embed-url need --embedder "
         "openai\n"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    j = tmp_path / "journal.sqlite3"
    MemoryService(j).close()
    before = sqlite3.connect(j).execute("SELECT COUNT(*) FROM journal_memory_items").fetchone()
    code, _, err = _cli(capsys, *argv, "--journal", str(j))
    assert (code, err) == (1, message)
    assert sqlite3.connect(j).execute("SELECT COUNT(*) FROM journal_memory_items").fetchone() == before


def test_cli_since_accepts_rfc3339_and_durations(tmp_path: Path, capsys) -> None:
    j = str(tmp_path / "journal.sqlite3")
    _cli(capsys, "memory", "add", "recent", "--journal", j)
    code, out, _ = _cli(capsys, "memory", "list", "--since", "1h", "--journal", j, "-o", "json")
    assert len(json.loads(out)["items"]) == 1
    code, out, _ = _cli(capsys, "memory", "list", "--until", rfc3339(T0), "--journal", j, "-o", "json")
    assert json.loads(out)["items"] == []
