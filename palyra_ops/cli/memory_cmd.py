"""`palyra-ops memory add|list|search|delete|vacuum|backfill|stats` over `MemoryService` (SPEC §9).

The daemon runs retention and backfill on its own schedule; these commands are for operators who
want to look, add by hand, or run a pass now (they take the same file lock as the daemon).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from palyra_ops.cli._common import add_journal_flag, add_output_flag, default_journal_path, emit
from palyra_ops.clock import SystemClock, rfc3339
from palyra_ops.durations import parse_duration_ms
from palyra_ops.errors import PalyraError
from palyra_ops.memory.embedders import EmbedderSpec
from palyra_ops.memory.maintenance import MemoryConfig, RetentionConfig, parse_size_bytes
from palyra_ops.memory.service import MemoryService
from palyra_ops.numbers import cli_int, parse_when


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "memory",
        help="memory items: add, list, search, retention, embeddings backfill",
        description="Memory items kept from local_only deliveries and added by hand, and their embeddings index.",
    )
    sub = parser.add_subparsers(dest="memory_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("add", help="add a memory item")
    p.add_argument("text", help="item text, or - to read it from stdin")
    p.add_argument("--routine", default=None, help="routine the item belongs to")
    p.add_argument("--run", default=None, help="run the item came from")
    p.add_argument("--ttl", default=None, help="delete after this duration (e.g. 7d)")
    _common(p)
    p.set_defaults(func=_add)

    p = sub.add_parser("list", help="list items, newest first")
    _filters(p)
    p.add_argument("--limit", "-n", type=cli_int(), default=20, help="items per page (default 20)")
    p.add_argument("--cursor", default=None, help="next_cursor of the previous page")
    _common(p)
    p.set_defaults(func=_list)

    p = sub.add_parser("search", help="nearest items to a text")
    p.add_argument("text", help="what to look for")
    p.add_argument("-k", type=cli_int(), default=10, help="how many results (default 10)")
    _filters(p)
    _common(p, embedder=True)
    p.set_defaults(func=_search)

    p = sub.add_parser("delete", help="delete items by id")
    p.add_argument("ids", nargs="+", metavar="ID", help="memory item id (one or more)")
    _common(p)
    p.set_defaults(func=_delete)

    p = sub.add_parser("vacuum", help="apply retention now, then VACUUM when worthwhile")
    p.add_argument("--max-age", default=None, help="delete items older than this (e.g. 30d)")
    p.add_argument("--max-items", type=cli_int(), default=None, help="keep at most this many items (newest)")
    p.add_argument("--max-bytes", default=None, help="keep at most this much item text (e.g. 256MiB)")
    p.add_argument("--force", action="store_true", help="VACUUM even when little would be freed")
    _common(p)
    p.set_defaults(func=_vacuum)

    p = sub.add_parser("backfill", help="embed items that lack a vector from the current model")
    p.add_argument("--batch-size", type=cli_int(), default=64, help="items per embedding call (default 64)")
    p.add_argument("--limit", type=cli_int(), default=None, help="stop after this many items")
    _common(p, embedder=True)
    p.set_defaults(func=_backfill)

    p = sub.add_parser("stats", help="item counts, embedding state, index and file sizes")
    _common(p, embedder=True)
    p.set_defaults(func=_stats)


def _common(p: argparse.ArgumentParser, embedder: bool = False) -> None:
    add_journal_flag(p)
    add_output_flag(p)
    if embedder:
        g = p.add_argument_group("embedder (default: the one the daemon last used, else hashing)")
        g.add_argument("--embedder", choices=["hashing", "openai"], default=None, help="embedding provider")
        g.add_argument("--embed-model", default=None, help="model name for --embedder openai")
        g.add_argument("--embed-url", default=None, help="base URL of an OpenAI-compatible API (…/v1)")
        g.add_argument("--embed-dim", type=cli_int(), default=None, help="vector dimensions")
        g.add_argument("--embed-api-key-env", default="OPENAI_API_KEY", help="env var holding the API key")


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--routine", default=None, help="only items of this routine")
    p.add_argument("--since", default=None, help="RFC 3339 instant or a duration ago (e.g. 24h)")
    p.add_argument("--until", default=None, help="RFC 3339 instant or a duration ago")


def _when(flag: str, value: str | None, now_ms: int) -> int | None:
    if value is None:
        return None
    try:
        return parse_when(value, now_ms, flag)
    except ValueError as exc:
        raise PalyraError(str(exc)) from None


def _spec(args: argparse.Namespace) -> EmbedderSpec | None:
    if getattr(args, "embedder", None) is None:
        if getattr(args, "embed_model", None) or getattr(args, "embed_url", None):
            raise PalyraError("--embed-model/--embed-url need --embedder openai")
        if getattr(args, "embed_dim", None):
            return EmbedderSpec(kind="hashing", dim=args.embed_dim)
        return None
    return EmbedderSpec.from_dict(
        {
            "kind": args.embedder,
            "model": args.embed_model,
            "base_url": args.embed_url,
            "dim": args.embed_dim,
            "api_key_env": args.embed_api_key_env,
        }
    )


def _service(args: argparse.Namespace, *, create: bool = False, config: MemoryConfig | None = None) -> MemoryService:
    path = args.journal or default_journal_path()
    return MemoryService(path, _spec(args), SystemClock(), config, create=create)


def _add(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    ttl = None
    if args.ttl is not None:
        try:
            ttl = parse_duration_ms(args.ttl)
        except ValueError as exc:
            raise PalyraError(f"--ttl: {exc}") from None
    with _service(args, create=True) as svc:
        item = svc.add_item(text, routine_id=args.routine, run_id=args.run, source="cli", ttl_ms=ttl)
    emit(item, args.output, lambda item: item.id)
    return 0


def _snippet(text: str, width: int = 90) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _list(args: argparse.Namespace) -> int:
    with _service(args) as svc:
        now = svc.clock.now_ms()
        page = svc.list(
            routine_id=args.routine,
            since_ms=_when("--since", args.since, now),
            until_ms=_when("--until", args.until, now),
            limit=args.limit,
            cursor=args.cursor,
        )
    emit(page, args.output, _page_text)
    return 0


def _page_text(page: Any) -> str:
    lines = [
        f"{item.id}  {rfc3339(item.created_at_ms)}  {item.routine_id or '-'}  "
        f"{'embedded' if item.embedding else 'pending':8}  {_snippet(item.text, 70)}"
        for item in page.items
    ]
    if page.next_cursor:
        lines.append(f"(more: --cursor {page.next_cursor})")
    return "\n".join(lines)


def _search(args: argparse.Namespace) -> int:
    with _service(args) as svc:
        now = svc.clock.now_ms()
        result = svc.search(
            args.text,
            k=args.k,
            routine_id=args.routine,
            since_ms=_when("--since", args.since, now),
            until_ms=_when("--until", args.until, now),
        )
    emit(result, args.output, _hits_text)
    return 0


def _hits_text(result: Any) -> str:
    """The hits; the search's notes (e.g. an exact scan instead of the index) go to stderr, the JSON
    view carries them in `notes`."""
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    lines = [
        f"{hit.score:6.3f}  {hit.item.id}  routine={hit.item.routine_id or '-'}  run={hit.item.run_id or '-'}  "
        f"{rfc3339(hit.item.created_at_ms)}  {_snippet(hit.item.text, 70)}"
        for hit in result.hits
    ]
    return "\n".join(lines or ["no results"])


def _delete(args: argparse.Namespace) -> int:
    with _service(args) as svc:
        n = svc.delete(args.ids)
    emit({"deleted": n}, args.output, lambda doc: f"deleted {doc['deleted']} item(s)")
    return 0 if n == len(set(args.ids)) else 1


def _vacuum(args: argparse.Namespace) -> int:
    try:
        max_age = parse_duration_ms(args.max_age) if args.max_age else None
    except ValueError as exc:
        raise PalyraError(f"--max-age: {exc}") from None
    if args.max_items is not None and args.max_items < 0:
        raise PalyraError("--max-items must not be negative")
    max_bytes = parse_size_bytes(args.max_bytes) if args.max_bytes else None
    config = MemoryConfig(retention=RetentionConfig(max_age_ms=max_age, max_items=args.max_items, max_bytes=max_bytes))
    with _service(args, config=config) as svc:
        res = svc.maintain(force_vacuum=args.force)
    emit(res, args.output, _maintained_text)
    return 0


def _maintained_text(res: Any) -> str:
    text = (
        f"deleted {res.deleted} item(s): ttl {res.deleted_ttl}, max-age {res.deleted_max_age}, "
        f"max-items {res.deleted_max_items}, max-bytes {res.deleted_max_bytes} ({res.freed_text_bytes} text bytes)"
    )
    v = res.vacuum
    if v is not None and v.ran:
        text += f"\nvacuum: {v.file_bytes_before} -> {v.file_bytes_after} bytes (freed {v.freed_bytes})"
    elif v is not None:
        text += f"\nvacuum skipped: {v.reason}"
    return text


def _backfill(args: argparse.Namespace) -> int:
    if not 1 <= args.batch_size <= 2048:
        raise PalyraError("--batch-size must be between 1 and 2048")
    with _service(args) as svc:
        res = svc.backfill(batch_size=args.batch_size, limit=args.limit)
    emit(res, args.output, _backfilled_text)
    if res.error:
        print(f"palyra-ops: backfill stopped: {res.error}", file=sys.stderr)
        return 1
    return 0


def _backfilled_text(res: Any) -> str:
    m = res.model
    model = f"{m.get('model')} ({m.get('dim')}d, v{m.get('version')})" if m else "?"
    return (
        f"embedded {res.embedded} item(s) in {res.batches} batch(es) with {model} "
        f"in {res.duration_ms} ms; {res.pending_after} pending; index {res.index_action}, {res.index_count} vectors"
    )


def _stats(args: argparse.Namespace) -> int:
    with _service(args) as svc:
        stats: dict[str, Any] = svc.stats()
    emit(stats, args.output, _stats_text)
    return 0


def _stats_text(stats: dict[str, Any]) -> str:
    e = stats["embedder"]
    idx = stats["index"]
    j = stats["journal"]
    if idx.get("count") is not None:
        index = f"index:     {idx['path']}: {idx['count']} vectors, {idx['size']} bytes, saved {idx['saved_at']}"
    else:
        index = f"index:     {idx['path']}: {'present' if idx['exists'] else 'missing'}"
    return "\n".join([
        f"items:     {stats['items']} ({stats['text_bytes']} text bytes), oldest {stats['oldest']}, newest {stats['newest']}",
        f"embedder:  {e['model']} ({e['dim']}d, v{e['version']}): {stats['embedded']} embedded, {stats['pending']} pending",
        index,
        f"journal:   {j['location']}: items table {j['table_bytes']} bytes" if "location" in j  # PostgreSQL
        else f"journal:   {j['path']}: {j['file_bytes']} bytes, {j['free_bytes']} free",
    ])
