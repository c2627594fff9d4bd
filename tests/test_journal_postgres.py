"""What only the PostgreSQL store has to show: opening by URL, one-line failures, the database's clock.

The behaviour both stores share is the contract (tests/test_journal_contract.py runs it on both);
these are the parts an engine brings of its own: a server that is not there, a clock that is off,
two processes migrating one new database at once, no prepared statements (a transaction pooler).
"""

from __future__ import annotations

import inspect
import threading
import time
from pathlib import Path

import psycopg
import pytest
from pgcluster import PgCluster, _free_port

from palyra_ops.clock import FakeClock
from palyra_ops.errors import JournalBusy, JournalUnavailable, PalyraError
from palyra_ops.journal import JournalStore, open_journal, read_snapshot
from palyra_ops.journal.migrations import all_migrations
from palyra_ops.journal.postgres import PgJournal
from palyra_ops.journal.postgres_conn import PgTxn
from palyra_ops.journal.postgres_schema import pg_migrations


def test_a_postgresql_url_opens_the_postgresql_store(pg_url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PALYRA_STATE_ROOT", str(tmp_path / "state"))
    with open_journal(pg_url) as j:
        assert isinstance(j, PgJournal)
        with j.transaction() as c:
            assert isinstance(c, PgTxn)
            j.put_job(c, "a", trigger_kind="manual")
        # side files (memory index, caches) of a PostgreSQL journal go under the state root
        assert j.path.parent == tmp_path / "state" and j.path.name.startswith("postgres-postgres_127.0.0.1_")
    snap = read_snapshot(pg_url)
    assert set(snap.jobs) == {"a"} and snap.serial == 0 and snap.lineage
    assert not (tmp_path / "state").exists()  # opening creates no file


def test_the_postgresql_store_satisfies_the_protocol(pg_url: str) -> None:
    with open_journal(pg_url) as j:
        for name, member in inspect.getmembers(JournalStore):
            if name.startswith("_") or not callable(member):
                continue
            want = list(inspect.signature(member).parameters)[1:]
            assert list(inspect.signature(getattr(j, name)).parameters) == want, name
        for name, member in inspect.getmembers(JournalStore):
            if isinstance(member, property):  # path, location, fault, write_fault
                getattr(j, name)
        assert j.location == pg_url and isinstance(j.clock.now_ms(), int)


def test_the_postgresql_migrations_mirror_sqlite_s_core_steps(pg_url: str, tmp_path: Path) -> None:
    """Same step names, and every job/run column SQLite has exists on PostgreSQL (a core migration
    added to one store only would show up here, not as a KeyError in the daemon)."""
    assert [name for name, _ in pg_migrations()] == [name for name, _ in all_migrations()]
    with open_journal(tmp_path / "j.sqlite3") as lite, open_journal(pg_url) as pg:
        for table in ("journal_cron_jobs", "journal_cron_runs", "journal_resources", "journal_approvals",
                      "journal_daemons", "journal_memory_items", "journal_memory_state"):
            lite_cols = {r[1] for r in lite.conn.execute(f"PRAGMA table_info({table})")}  # type: ignore[attr-defined]
            pg_cols = {r["column_name"] for r in pg._all(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,))}
            assert lite_cols == pg_cols - {"seq"}, table


def test_an_unreachable_server_is_one_line_naming_the_journal_without_its_password(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"postgresql://ops:s3cret@127.0.0.1:{_free_port()}/palyra"
    t0 = time.monotonic()
    with pytest.raises(JournalUnavailable) as exc:
        open_journal(url)
    msg = exc.value.message
    assert msg.startswith(f"journal postgresql://ops:***@127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}/palyra: ")
    assert "cannot reach the database" in msg and "\n" not in msg and "s3cret" not in msg
    assert time.monotonic() - t0 < 10
    assert list(tmp_path.iterdir()) == []


def test_a_missing_database_is_one_line(pg_cluster: PgCluster) -> None:
    with pytest.raises(JournalUnavailable, match=r'database "no_such_db" does not exist') as exc:
        open_journal(pg_cluster.url("no_such_db"))
    assert "\n" not in exc.value.message


def test_two_processes_opening_a_new_database_at_once_migrate_it_once(pg_url: str) -> None:
    opened: list[PgJournal] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(PgJournal(pg_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == [] and len(opened) == 4
        assert {j.lineage() for j in opened} == {opened[0].lineage()}
        assert opened[0].migrations_applied() == [name for name, _ in pg_migrations()]
    finally:
        for j in opened:
            j.close()


def _db_now_ms(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint").fetchone()
    assert row is not None
    return int(row[0])


def test_a_clock_ahead_of_the_database_neither_sees_nor_claims_work_early(pg_url: str) -> None:
    """SPEC §11: due times are judged by the database's clock. A daemon 60 s ahead sees a job due
    in 30 s as not due, cannot claim it, and is told to wake when the database will agree."""
    db_now = _db_now_ms(pg_url)
    ahead = FakeClock(db_now + 60_000)
    with open_journal(pg_url, clock=ahead) as j:
        due_at = db_now + 30_000
        with j.transaction() as c:
            j.put_job(c, "soon", trigger_kind="schedule", next_run_at_unix_ms=due_at)
            j.put_job(c, "past", trigger_kind="schedule", next_run_at_unix_ms=db_now - 1_000)
        assert [r["routine_id"] for r in j.due_jobs(ahead.now_ms())] == ["past"]
        assert j.count_due(ahead.now_ms()) == 1
        run = {"routine_id": "soon", "trigger_kind": "schedule", "status": "accepted",
               "occurrence_key": f"soon|{due_at}", "scheduled_at_ms": due_at}
        assert j.claim_occurrences([("soon", due_at, [run], {"next_run_at_unix_ms": due_at + 60_000})]) == [None]
        assert j.runs_in_order() == []
        with j.transaction() as c:
            j.put_job(c, "past", next_run_at_unix_ms=None)
        # the earliest due time, in this daemon's clock: about 60 s later than the database's
        nxt = j.next_due_ms()
        assert nxt is not None and due_at + 59_000 <= nxt <= due_at + 61_000


def test_a_clock_behind_the_database_is_judged_by_its_own_clock(pg_url: str) -> None:
    """A FakeClock in the past (the tests') behaves as on SQLite: nothing is due before its own time."""
    t0 = 1_767_225_600_000
    with open_journal(pg_url, clock=FakeClock(t0)) as j:
        with j.transaction() as c:
            j.put_job(c, "a", trigger_kind="schedule", next_run_at_unix_ms=t0 + 10)
        assert j.due_jobs(t0) == [] and j.next_due_ms() == t0 + 10
        assert [r["routine_id"] for r in j.due_jobs(t0 + 10)] == ["a"]


def test_the_store_works_again_after_the_server_restarts(pg_cluster: PgCluster, pg_url: str) -> None:
    """Pooled connections broken by a restart are replaced (checked on checkout), not reported."""
    with open_journal(pg_url) as j:
        with j.transaction() as c:
            j.put_job(c, "a", trigger_kind="manual")
        pg_cluster.restart()
        assert j.get_job("a") is not None
        j.probe_write()
        assert j.fault is None


def test_a_concurrent_apply_waits_for_the_busy_timeout_then_is_busy(pg_url: str, monkeypatch) -> None:
    """Two applies at once: the stale-plan check locks the serial row; the second waits as long as
    SQLite waits for its write lock (PALYRA_JOURNAL_BUSY_TIMEOUT), then gets a one-line JournalBusy."""
    monkeypatch.setenv("PALYRA_JOURNAL_BUSY_TIMEOUT", "300ms")
    with open_journal(pg_url) as first, open_journal(pg_url) as second:
        with first.transaction() as c:
            first.identity(c)
            t0 = time.monotonic()
            with pytest.raises(JournalBusy, match=r"^journal postgresql://.*: busy \(") as exc, \
                    second.transaction() as c2:
                second.identity(c2)
            assert 0.25 <= time.monotonic() - t0 < 5 and "\n" not in exc.value.message
            first.bump_serial(c)
        with second.transaction() as c2:  # free again once the first committed
            assert second.identity(c2)[1] == 1


def test_reads_retry_on_a_fresh_connection_when_the_server_restarted_unseen(pg_cluster: PgCluster,
                                                                           pg_url: str) -> None:
    """A pooled connection used a moment ago is not checked before reuse; when the server restarted
    in between, the read finds it broken and runs again on a new one instead of failing."""
    with open_journal(pg_url) as j:
        assert isinstance(j, PgJournal)
        j._recent.fresh_s = 3600  # every connection counts as just used: the pool never checks
        with j.transaction() as c:
            j.put_job(c, "a", trigger_kind="manual")
        assert j.get_job("a") is not None
        pg_cluster.restart()
        assert j.get_job("a") is not None and [r["routine_id"] for r in j.list_jobs()] == ["a"]
        assert j.fault is None


def test_due_jobs_is_an_index_range_even_with_the_database_clock(pg_url: str) -> None:
    """Nothing due among many jobs must not scan them all: the due bound is an index condition."""
    from palyra_ops.journal.postgres_conn import DB_NOW_MS

    with open_journal(pg_url) as j:
        assert isinstance(j, PgJournal)
        with j.transaction() as c:
            j.put_jobs(c, [(f"r{i:05}", {"trigger_kind": "schedule", "next_run_at_unix_ms": 10**13 + i})
                           for i in range(5000)], existing=())
        with j.pool.connection() as conn:
            conn.execute("ANALYZE journal_cron_jobs")
            plan = "\n".join(r["QUERY PLAN"] for r in conn.execute(
                f"EXPLAIN SELECT * FROM journal_cron_jobs WHERE next_run_at_unix_ms IS NOT NULL AND enabled = 1"
                f" AND next_run_at_unix_ms <= LEAST(%s, {DB_NOW_MS} + 10) ORDER BY next_run_at_unix_ms LIMIT 64",
                (10**13,)))
        assert "Index Cond: ((next_run_at_unix_ms IS NOT NULL) AND (next_run_at_unix_ms <= LEAST(" in plan, plan
        assert j.due_jobs(10**13 + 10) == [] and j.count_due(10**13 + 10) == 0  # all in the database's future


def test_daemon_leases_are_judged_by_the_database_s_clock(pg_url: str) -> None:
    """Daemons whose clocks disagree by minutes agree on who is gone (SPEC §11): the heartbeat is the
    database's time, so a daemon a minute ahead is not gone to a true one, and a daemon a minute
    ahead does not find its live peers gone."""
    true_ms = int(time.time() * 1000)
    with open_journal(pg_url, clock=FakeClock(true_ms + 60_000)) as ahead, open_journal(pg_url) as true:
        ahead.register_daemon("ahead", lease_ms=2000, host="h", pid=1, address=None, version="v")
        true.register_daemon("true", lease_ms=2000, host="h", pid=2, address=None, version="v")
        assert ahead.live_daemon_ids() == true.live_daemon_ids() == {"ahead", "true"}
        listed = {d["daemon_id"]: d for d in true.list_daemons()}
        assert abs(listed["ahead"]["heartbeat_at_ms"] - listed["true"]["heartbeat_at_ms"]) < 5000
        assert ahead.reap_lost_daemons(ahead.clock.now_ms(), spare="ahead") == []
        assert true.reap_lost_daemons(true.clock.now_ms(), spare="true") == []
        assert {d["daemon_id"] for d in true.list_daemons()} == {"ahead", "true"}


def test_daemons_claiming_a_burst_at_once_share_it(pg_url: str) -> None:
    """claim_due locks the due jobs it reads (SKIP LOCKED): a second claimer arriving while the first
    holds its batch takes the next jobs at once instead of waiting or coming back empty."""
    t0 = 1_767_225_600_000
    with open_journal(pg_url) as setup, setup.transaction() as c:
        for i in range(20):
            setup.put_resource(c, kind="Routine", name=f"r{i:02}", body={"metadata": {"name": f"r{i:02}"}}, hash="h",
                               managed=True, applied_hash="h", source_file=None)
            setup.put_job(c, f"r{i:02}", trigger_kind="schedule", next_run_at_unix_ms=t0 + i)
    a, b = PgJournal(pg_url), PgJournal(pg_url)
    holding, release = threading.Event(), threading.Event()
    got: dict[str, list[str]] = {}

    def claims(jobs: list) -> list:
        return [(job["routine_id"], job["next_run_at_unix_ms"], [{
            "routine_id": job["routine_id"], "trigger_kind": "schedule", "status": "accepted", "attempt": 1,
            "created_at_ms": t0, "occurrence_key": f"{job['routine_id']}|{job['next_run_at_unix_ms']}",
            "scheduled_at_ms": job["next_run_at_unix_ms"]}], {"next_run_at_unix_ms": None}) for job in jobs]

    def slow_plan(jobs: list) -> list:
        got["a"] = [job["routine_id"] for job in jobs]
        holding.set()
        assert release.wait(10)
        return claims(jobs)

    def fast_plan(jobs: list) -> list:
        got["b"] = [job["routine_id"] for job in jobs]
        return claims(jobs)

    try:
        t = threading.Thread(target=lambda: a.claim_due(t0 + 100, 10, slow_plan))
        t.start()
        assert holding.wait(10)
        started = time.monotonic()
        due, results = b.claim_due(t0 + 100, 10, fast_plan)
        assert time.monotonic() - started < 2  # not waiting for a's batch
        release.set()
        t.join(10)
        assert (got["a"], got["b"]) == ([f"r{i:02}" for i in range(10)], [f"r{i:02}" for i in range(10, 20)])
        assert due == 10 and all(r and r[0] for r in results)
        assert len(a.runs_in_order()) == 20
    finally:
        release.set()
        a.close()
        b.close()


def test_the_pooled_connections_carry_a_statement_timeout(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A statement the server never answers fails after PALYRA_JOURNAL_STATEMENT_TIMEOUT (60 s by
    default) as a one-line busy error, instead of holding its thread; 0 sets none."""
    with PgJournal(pg_url) as j:
        row = j._one("SHOW statement_timeout")
        assert row is not None and row["statement_timeout"] == "1min"
    monkeypatch.setenv("PALYRA_JOURNAL_STATEMENT_TIMEOUT", "200ms")
    with PgJournal(pg_url) as j:
        started = time.monotonic()
        with pytest.raises(JournalBusy, match="statement timeout"):
            j._one("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 4
        assert j.serial() == 0  # the store goes on working
    monkeypatch.setenv("PALYRA_JOURNAL_STATEMENT_TIMEOUT", "0")
    with PgJournal(pg_url) as j:
        row = j._one("SHOW statement_timeout")
        assert row is not None and row["statement_timeout"] == "0"
    monkeypatch.setenv("PALYRA_JOURNAL_STATEMENT_TIMEOUT", "soon")
    with pytest.raises(PalyraError, match="PALYRA_JOURNAL_STATEMENT_TIMEOUT"):
        PgJournal(pg_url)


def _prepared_on_its_connection(j: PgJournal, run_id: str) -> int:
    """The run path's read six times on the pool's one connection, then how many statements that
    connection's server session holds prepared (psycopg prepares after 5 executions)."""
    for _ in range(6):
        assert j.get_run(run_id) is None
    row = j._one("SELECT count(*) AS n FROM pg_prepared_statements")
    assert row is not None
    return int(row["n"])


def test_prepared_statements_are_on_by_default_and_can_be_turned_off(pg_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The server parses and plans a repeated statement once per connection (the burst's server CPU,
    bench/README.md); `PALYRA_JOURNAL_PREPARED_STATEMENTS=off` is for a pooler that cannot track
    protocol-level prepared statements (PgBouncer < 1.21 or without max_prepared_statements)."""
    monkeypatch.delenv("PALYRA_JOURNAL_PREPARED_STATEMENTS", raising=False)
    with PgJournal(pg_url, pool_max=1) as j:
        assert _prepared_on_its_connection(j, "no-such-run") >= 1
    monkeypatch.setenv("PALYRA_JOURNAL_PREPARED_STATEMENTS", "off")
    with PgJournal(pg_url, pool_max=1) as j:
        assert _prepared_on_its_connection(j, "no-such-run") == 0
        assert j.serial() >= 0  # and the store works as before
    monkeypatch.setenv("PALYRA_JOURNAL_PREPARED_STATEMENTS", "sometimes")
    with pytest.raises(PalyraError, match="PALYRA_JOURNAL_PREPARED_STATEMENTS: expected on or off, got 'sometimes'"):
        PgJournal(pg_url)
