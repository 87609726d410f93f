"""The test PostgreSQL itself: unprivileged, loopback only, fsync on, restartable."""

from __future__ import annotations

import os
import pwd

from tests.pg_server import MAX_CONNECTIONS, PostgresServer


def test_server_is_loopback_unprivileged_and_durable(postgres_server: PostgresServer) -> None:
    settings = postgres_server.psql(
        "SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_settings "
        "WHERE name IN ('listen_addresses', 'fsync', 'synchronous_commit', 'max_connections',"
        " 'port', 'server_encoding', 'lc_ctype')"
    ).strip()
    assert settings == (
        f"fsync=on,lc_ctype=C.UTF-8,listen_addresses=127.0.0.1,max_connections={MAX_CONNECTIONS},"
        f"port={postgres_server.port},server_encoding=UTF8,synchronous_commit=on"
    )
    assert postgres_server.process is not None
    owner = os.stat(f"/proc/{postgres_server.process.pid}").st_uid
    expected = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert owner == expected
    # The unix socket is in the cluster's own directory, not a shared one.
    assert sorted(p.name for p in postgres_server.socket_dir.iterdir()) == [
        f".s.PGSQL.{postgres_server.port}",
        f".s.PGSQL.{postgres_server.port}.lock",
    ]


def test_each_database_is_fresh_and_survives_a_restart(postgres_server: PostgresServer) -> None:
    first = postgres_server.create_database()
    second = postgres_server.create_database()
    assert first != second
    name = first.rsplit("/", 1)[1]
    postgres_server.psql("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)", name)
    port = postgres_server.port
    postgres_server.stop("immediate")  # as after a crash: recovery replays the WAL
    assert not postgres_server.running
    postgres_server.start()
    assert postgres_server.port == port
    assert postgres_server.psql("SELECT n FROM kept", name) == "7\n"
    assert (
        postgres_server.psql(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'kept'", second.rsplit("/", 1)[1]
        )
        == "0\n"
    )
