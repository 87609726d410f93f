"""What only the PostgreSQL store has: its migrations, its trigram index, its event log, and
its behaviour when the server goes away (stopped, frozen) and comes back."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import ConfigError
from appliance.errors import StorageUnavailable
from appliance.store import postgres
from appliance.store.interface import IMAGE_DELETED, Event, Metadata, Tenant
from appliance.store.postgres import RESET, open_postgres
from appliance.store.postgres_migrations import MIGRATIONS
from tests.api_helpers import TIMESTAMP_RE
from tests.pg_server import PostgresServer
from tests.test_store_contract import (
    SEARCH_CORPUS,
    SEARCH_NEEDLES,
    insert,
    new_image,
    reference_search,
    run,
)

# Guards only: a call that does not return within this long has hung (the store's own
# bounds are far shorter), and the test fails instead of hanging the run.
HANG = 60


def test_migrations_are_named_recorded_and_run_once(postgres_url: str) -> None:
    async def scenario() -> None:
        metadata = await open_postgres(postgres_url)
        try:
            first = await metadata.db.applied_migrations()
            assert [name for name, _ in first] == [name for name, _ in MIGRATIONS]
            assert all(TIMESTAMP_RE.match(at) for _, at in first)
            async with metadata.db.transaction() as tx:
                await tx.execute("UPDATE migrations SET applied_at = '2000-01-01T00:00:00Z'")
        finally:
            await metadata.close()
        again = await open_postgres(postgres_url)
        try:
            assert await again.db.applied_migrations() == [
                (name, "2000-01-01T00:00:00Z") for name, _ in MIGRATIONS
            ]
            tables = await again.db.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
            assert [r["tablename"] for r in tables] == [
                "api_keys", "appliance_state", "events", "events_head", "folder_stats",
                "folders", "image_fetches", "images", "migrations", "tenant_stats", "tenants",
            ]  # fmt: skip
        finally:
            await again.close()

    run(scenario())


def test_the_trigram_index_answers_exactly_as_the_reference(
    postgres_server: PostgresServer,
) -> None:
    """The same searches with the trigram indexes as the only way in (the other indexes
    dropped, sequential and plain index scans off): pg_trgm only narrows, and what it lets
    through is rechecked, so the answers must not change."""
    url = postgres_server.create_database()

    async def scenario() -> None:
        metadata = await open_postgres(url)
        try:
            mine = await metadata.keys.ensure_tenant("mine")
            records = [
                await insert(metadata, new_image(mine, n, filename=name, alt_text=alt))
                for n, (name, alt) in enumerate(SEARCH_CORPUS)
            ]
            async with metadata.db.transaction() as tx:
                for index in (
                    "images_live_by_tenant",
                    "images_live_by_folder",
                    "images_live_by_blob",
                    "images_live_by_name",
                    "images_live_by_size",
                ):
                    await tx.execute(f"DROP INDEX {index}")
                await tx.execute("ANALYZE images")
        finally:
            await metadata.close()
        forced = await open_postgres(url + "?enable_seqscan=off&enable_indexscan=off")
        try:
            plan = await forced.db.fetch(
                "EXPLAIN SELECT count(*) FROM images WHERE tenant_id = $1 AND deleted_at IS NULL"
                " AND (filename_folded LIKE $2 OR alt_text_folded LIKE $2)",
                mine.id,
                "%abc%",
            )
            lines = "\n".join(r[0] for r in plan)
            assert "Bitmap Index Scan on images_search_filename" in lines, lines
            assert "Bitmap Index Scan on images_search_alt_text" in lines, lines
            failures = []
            for needle in SEARCH_NEEDLES:
                got = await forced.images.list_page(
                    mine.id, folder=None, search=needle, page=1, page_size=100
                )
                expected = reference_search(records, needle)
                if ([r.id for r in got.images], got.total) != (expected, len(expected)):
                    failures.append(needle)
            assert failures == []
        finally:
            await forced.close()

    run(scenario())


def test_pruned_events_read_as_a_reset(postgres_url: str) -> None:
    async def scenario() -> None:
        metadata = await open_postgres(postgres_url)
        try:
            mine = await metadata.keys.ensure_tenant("mine")
            ids = [(await insert(metadata, new_image(mine, n))).id for n in range(3)]
            _, cursor = await metadata.images.events_since(None)
            for image_id in ids:
                await metadata.images.delete(mine.id, image_id)
            async with metadata.db.transaction() as tx:  # as the retention would
                await tx.execute("DELETE FROM events WHERE id <= $1", cursor + 2)
            assert await metadata.images.events_since(cursor) == (
                [Event(cursor + 1, RESET, ""), Event(cursor + 3, IMAGE_DELETED, ids[2])],
                cursor + 3,
            )
            async with metadata.db.transaction() as tx:
                await tx.execute("DELETE FROM events")
            assert await metadata.images.events_since(cursor) == (
                [Event(cursor + 1, RESET, "")],
                cursor + 3,
            )
            assert await metadata.images.events_since(cursor + 3) == ([], cursor + 3)
        finally:
            await metadata.close()

    run(scenario())


_uploads = iter(range(10**6))


async def _calls(metadata: Metadata, tenant: Tenant, image_id: str) -> list[str]:
    """One of each kind of call; what each answered (or that it was StorageUnavailable)."""
    tenant_id = tenant.id
    results = []
    for call in (
        lambda: metadata.images.get_public(image_id),
        lambda: metadata.images.list_page(
            tenant_id, folder=None, search="pic", page=1, page_size=10
        ),
        lambda: metadata.keys.authenticate("pk_" + "a" * 16 + "_" + "b" * 43),
        lambda: metadata.images.set_state("x", "y"),
        lambda: insert(metadata, new_image(tenant, f"fault-{next(_uploads)}")),
        lambda: metadata.ping(),
    ):
        try:
            await asyncio.wait_for(call(), HANG)
        except StorageUnavailable as exc:
            assert exc.status == 503 and exc.code == "storage_unavailable"
            assert exc.headers == {"Retry-After": str(StorageUnavailable.RETRY_AFTER)}
            results.append("unavailable")
        else:
            results.append("ok")
    return results


def test_a_stopped_server_is_503_and_the_store_recovers_by_itself(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()

    async def scenario() -> None:
        metadata, other = await open_postgres(url), await open_postgres(url)
        try:
            mine = await metadata.keys.ensure_tenant("mine")
            record = await insert(metadata, new_image(mine, "pic", filename="pic.png"))
            await metadata.images.wait_for_events(0.01)  # its listener is up
            assert await _calls(metadata, mine, record.id) == ["ok"] * 6
            postgres_server.stop()
            try:
                assert await _calls(metadata, mine, record.id) == ["unavailable"] * 6
                with pytest.raises(StorageUnavailable):
                    await asyncio.wait_for(open_postgres(url), HANG)
                await asyncio.wait_for(metadata.images.wait_for_events(0.2), HANG)
            finally:
                postgres_server.start()
            # Back: the same store instances work again, no reopening.
            assert await _calls(metadata, mine, record.id) == ["ok"] * 6
            _, cursor = await metadata.images.events_since(None)
            await other.images.delete(mine.id, record.id)
            seen: list[Event] = []
            while not seen:
                await asyncio.wait_for(metadata.images.wait_for_events(1.0), HANG)
                events, cursor = await metadata.images.events_since(cursor)
                seen += events
            assert seen == [Event(cursor, IMAGE_DELETED, record.id)]
            # ... and its listening connection is back too.
            listening = 0
            while not listening:
                listening = await metadata.db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
                )
                await asyncio.sleep(0.05)
            assert listening == 1
        finally:
            await metadata.close()
            await other.close()

    run(scenario())


def _server_processes(server: PostgresServer) -> list[int]:
    assert server.process is not None
    pids = [server.process.pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == server.process.pid:
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The store's bounds, shortened so that a frozen server costs this test seconds."""
    for name in ("CONNECT_TIMEOUT", "ACQUIRE_TIMEOUT", "STATEMENT_TIMEOUT", "LOCK_TIMEOUT"):
        monkeypatch.setattr(postgres, name, 0.5)
    yield


def test_a_frozen_server_is_503_after_the_timeout_not_a_hang(
    postgres_server: PostgresServer, short_timeouts: None
) -> None:
    """SIGSTOP every server process: connections stay open, nothing answers. Each call
    gives up after its bound; once the server runs again the store carries on."""
    url = postgres_server.create_database()

    async def scenario() -> None:
        metadata = await open_postgres(url)
        try:
            mine = await metadata.keys.ensure_tenant("mine")
            record = await insert(metadata, new_image(mine, "pic", filename="pic.png"))
            frozen = _server_processes(postgres_server)
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            try:
                assert await _calls(metadata, mine, record.id) == ["unavailable"] * 6
            finally:
                for pid in frozen:
                    os.kill(pid, signal.SIGCONT)
            results: list[str] = []
            for _ in range(20):  # the cancelled statements' connections may need a moment
                results = await _calls(metadata, mine, record.id)
                if results == ["ok"] * 6:
                    break
                await asyncio.sleep(0.1)
            assert results == ["ok"] * 6
        finally:
            await metadata.close()

    run(scenario())


def test_waiting_too_long_for_a_digest_lock_is_503(postgres_url: str, short_timeouts: None) -> None:
    async def scenario() -> None:
        first, second = await open_postgres(postgres_url), await open_postgres(postgres_url)
        try:
            mine = await first.keys.ensure_tenant("mine")
            async with first.images.locked(new_image(mine, 1).sha256) as tx:
                await tx.insert(new_image(mine, 1))
                with pytest.raises(StorageUnavailable):
                    async with second.images.locked(new_image(mine, 1).sha256):
                        pass
            # The holder committed; the lock is free for the other now.
            async with second.images.locked(new_image(mine, 1).sha256) as tx:
                assert await tx.in_use() is True
        finally:
            await first.close()
            await second.close()

    run(scenario())


def test_what_waiting_will_not_cure_is_a_configuration_error(
    postgres_server: PostgresServer,
) -> None:
    """Bad credentials, an unknown database or a user that may not create the schema: a
    message for the admin (`pictor` exits 2 with it), not a 503 retried for ever."""
    url = postgres_server.create_database()
    postgres_server.psql("CREATE ROLE weak LOGIN PASSWORD 'weak-password'")
    name = url.rsplit("/", 1)[1]
    base = f"127.0.0.1:{postgres_server.port}"
    cases = {
        url.replace(
            postgres_server.password, "wrong"
        ): 'password authentication failed for user "pictor"',
        url.rsplit("/", 1)[0] + "/nosuchdb": 'database "nosuchdb" does not exist',
        f"postgresql://weak:weak-password@{base}/{name}": "permission denied for schema public",
    }

    async def scenario() -> None:
        for bad, reason in cases.items():
            with pytest.raises(ConfigError) as caught:
                await asyncio.wait_for(open_postgres(bad), HANG)
            assert str(caught.value).startswith(f"--database: {reason}"), str(caught.value)
        assert "pg_trgm" in str(caught.value)

    try:
        run(scenario())
    finally:
        postgres_server.psql("DROP ROLE weak")
