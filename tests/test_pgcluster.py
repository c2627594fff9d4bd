"""The tests' own PostgreSQL (tests/pgcluster.py) starts, answers, and hands out separate databases."""

from __future__ import annotations

import psycopg
from pgcluster import PgCluster


def test_the_cluster_answers_select_1(pg_cluster: PgCluster) -> None:
    with psycopg.connect(pg_cluster.url(), connect_timeout=10) as conn:
        row = conn.execute("select 1").fetchone()
    assert row == (1,)


def test_each_test_gets_a_fresh_empty_database(pg_url: str, pg_cluster: PgCluster) -> None:
    with psycopg.connect(pg_url, connect_timeout=10, autocommit=True) as conn:
        tables = conn.execute("select count(*) from pg_tables where schemaname = 'public'").fetchone()
        conn.execute("create table t (x int)")
    assert tables == (0,)
    other = pg_cluster.create_database()
    try:
        with psycopg.connect(other, connect_timeout=10) as conn:
            assert conn.execute("select to_regclass('public.t')").fetchone() == (None,)
    finally:
        pg_cluster.drop_database(other)


def test_a_cluster_stops_and_leaves_nothing_behind() -> None:
    """What the session fixture's teardown does: the server is gone and so is its temp dir."""
    import socket

    from pgcluster import find_bindir

    bindir = find_bindir()
    assert bindir is not None
    cluster = PgCluster(bindir)
    cluster.start()
    root, port = cluster.root, cluster.port
    assert (root / "data" / "postmaster.pid").exists()
    cluster.stop()
    assert not root.exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the server still listens"
