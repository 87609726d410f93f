"""The metadata store's contract, one suite for every backend (SQLite, PostgreSQL).

Each test runs once per backend against the real database: a file under tmp_path for
SQLite, a fresh database on the session's PostgreSQL server. "Two instances" are two opens of
the same database, as two nodes (or two processes) would have.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.store.interface import (
    IMAGE_DELETED,
    KEY_REVOKED,
    Event,
    ImageRecord,
    Metadata,
    NewImage,
    Tenant,
    simple_fold,
)
from appliance.store.postgres import open_postgres
from appliance.store.sqlite import open_sqlite
from tests.api_helpers import TIMESTAMP_RE

T = TypeVar("T")
BACKENDS = ("sqlite", "postgres")


@dataclass
class Backend:
    name: str
    open: Callable[[], Awaitable[Metadata]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "pictor.db"
        return Backend("sqlite", lambda: open_sqlite(path))
    server = request.getfixturevalue("postgres_server")
    server.start()  # an earlier fault test may have left it stopped
    url = server.create_database()
    return Backend("postgres", lambda: open_postgres(url))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def sha(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def new_image(tenant: Tenant, n: int | str, **fields: Any) -> NewImage:
    base = NewImage(
        tenant_id=tenant.id,
        filename=f"image-{n}.png",
        alt_text="",
        folder=None,
        mime_type="image/png",
        size_bytes=1000 + len(str(n)),
        width=10,
        height=20,
        sha256=sha(n),
    )
    return replace(base, **fields)


async def insert(metadata: Metadata, new: NewImage) -> ImageRecord:
    async with metadata.images.locked(new.sha256) as tx:
        return await tx.insert(new)


def expected_record(new: NewImage, got: ImageRecord) -> ImageRecord:
    """What an insert of `new` must return, given the generated id, seq and timestamps."""
    assert got.id.startswith("img_") and len(got.id) == 26
    assert TIMESTAMP_RE.match(got.created_at)
    return ImageRecord(
        seq=got.seq,
        id=got.id,
        tenant_id=new.tenant_id,
        filename=new.filename,
        alt_text=new.alt_text,
        folder=new.folder,
        mime_type=new.mime_type,
        size_bytes=new.size_bytes,
        width=new.width,
        height=new.height,
        sha256=new.sha256,
        created_at=got.created_at,
        updated_at=got.created_at,
        deleted_at=None,
    )


# -- images -----------------------------------------------------------------------------


def test_insert_get_and_public_lookup(backend: Backend) -> None:
    async def scenario() -> None:
        metadata = await backend.open()
        try:
            mine = await metadata.keys.ensure_tenant("mine")
            theirs = await metadata.keys.ensure_tenant("theirs")
            new = new_image(mine, 1, alt_text="Été à la plage", folder="news")
            record = await insert(metadata, new)
            assert record == expected_record(new, record)
            assert await metadata.images.get(mine.id, record.id) == record
            assert await metadata.images.get(theirs.id, record.id) is None
            assert await metadata.images.get_public(record.id) == record
            assert await metadata.images.get_public("img_" + "x" * 22) is None
            assert await metadata.images.live_images() == [record]
            assert await metadata.images.live_digests() == {new.sha256}
            assert await metadata.check() == "ok"
        finally:
            await metadata.close()

    run(scenario())


def test_list_pages_newest_first_with_totals_and_filters(backend: Backend) -> None:
    async def scenario() -> None:
        metadata = await backend.open()
        try:
            mine = await metadata.keys.ensure_tenant("mine")
            theirs = await metadata.keys.ensure_tenant("theirs")
            made = []
            for n in range(7):
                folder = ("a", "b", None)[n % 3]
                made.append(await insert(metadata, new_image(mine, n, folder=folder)))
                await insert(metadata, new_image(theirs, f"t{n}", folder="a"))
            dup = await insert(metadata, new_image(mine, 3, filename="copy.png"))
            newest_first = [dup, *made[::-1]]

            async def page(**kw: Any) -> tuple[list[str], int]:
                args = {"folder": None, "search": None, "page": 1, "page_size": 3, **kw}
                got = await metadata.images.list_page(mine.id, **args)
                return [r.id for r in got.images], got.total

            ids = [r.id for r in newest_first]
            assert await page() == (ids[:3], 8)
            assert await page(page=2) == (ids[3:6], 8)
            assert await page(page=3) == (ids[6:], 8)
            assert await page(page=4) == ([], 8)
            in_a = [r.id for r in newest_first if r.folder == "a"]
            assert await page(folder="a", page_size=10) == (in_a, len(in_a))
            assert await page(folder="nowhere") == ([], 0)
            assert await page(sha256=sha(3), page_size=10) == ([dup.id, made[3].id], 2)
            assert await page(sha256=sha(3), folder="a", page_size=10) == ([made[3].id], 1)
            assert await page(sha256=sha("t1")) == ([], 0)  # theirs
            full = await metadata.images.list_page(
                mine.id, folder=None, search=None, page=1, page_size=100
            )
            assert full.images == newest_first
        finally:
            await metadata.close()

    run(scenario())


def test_folders_follow_inserts_moves_and_deletes(backend: Backend) -> None:
    async def scenario() -> None:
        metadata = await backend.open()
        try:
            mine = await metadata.keys.ensure_tenant("mine")
            theirs = await metadata.keys.ensure_tenant("theirs")
            await insert(metadata, new_image(theirs, "t", folder="theirs"))
            rng = random.Random(11)
            names = ["b", "a", "Été", "été", "Z", "d/e", "ä", "😀"]
            live: dict[str, str | None] = {}
            for step in range(60):
                action = rng.choice(["insert", "insert", "move", "clear", "delete"])
                if action == "insert" or not live:
                    record = await insert(
                        metadata, new_image(mine, step, folder=rng.choice([*names, None]))
                    )
                    live[record.id] = record.folder
                    continue
                image_id = rng.choice(sorted(live))
                if action == "delete":
                    assert await metadata.images.delete(mine.id, image_id) is not None
                    del live[image_id]
                else:
                    folder = rng.choice(names) if action == "move" else None
                    updated = await metadata.images.update(mine.id, image_id, {"folder": folder})
                    assert updated is not None and updated.folder == folder
                    live[image_id] = folder
                expected = sorted({f for f in live.values() if f is not None})  # code points
                assert await metadata.images.folders(mine.id) == expected, step
                for folder in expected:
                    got = await metadata.images.list_page(
                        mine.id, folder=folder, search=None, page=1, page_size=1
                    )
                    assert got.total == sum(1 for f in live.values() if f == folder)
            assert await metadata.images.folders(theirs.id) == ["theirs"]
            assert await metadata.check() == "ok"
        finally:
            await metadata.close()

    run(scenario())


def test_update_changes_only_alt_text_and_folder(backend: Backend) -> None:
    async def scenario() -> None:
        metadata = await backend.open()
        try:
            mine = await metadata.keys.ensure_tenant("mine")
            theirs = await metadata.keys.ensure_tenant("theirs")
            record = await insert(metadata, new_image(mine, 1, alt_text="sleepy tabby"))
            updated = await metadata.images.update(
                mine.id, record.id, {"alt_text": "Grand CHIEN", "folder": "pets"}
            )
            assert updated is not None
            assert TIMESTAMP_RE.match(updated.updated_at)
            assert updated == replace(
                record, alt_text="Grand CHIEN", folder="pets", updated_at=updated.updated_at
            )
            assert await metadata.images.get(mine.id, record.id) == updated
            # The search follows the new text, not the old one.
            for needle, found in (("tabby", []), ("chien", [record.id]), ("ta", [])):
                got = await metadata.images.list_page(
                    mine.id, folder=None, search=needle, page=1, page_size=10
                )
                assert [r.id for r in got.images] == found, needle
            assert await metadata.images.update(mine.id, record.id, {}) == updated
            assert await metadata.images.update(theirs.id, record.id, {"folder": "x"}) is None
            assert await metadata.images.update(mine.id, "img_nope", {"folder": "x"}) is None
            with pytest.raises(ValueError, match="filename"):
                await metadata.images.update(mine.id, record.id, {"filename": "x.png"})
        finally:
            await metadata.close()

    run(scenario())


def test_delete_leaves_a_tombstone_and_an_event(backend: Backend) -> None:
    async def scenario() -> None:
        first, second = await backend.open(), await backend.open()
        try:
            mine = await first.keys.ensure_tenant("mine")
            theirs = await first.keys.ensure_tenant("theirs")
            kept = await insert(first, new_image(mine, 1, folder="f"))
            doomed = await insert(first, new_image(mine, 2, folder="f"))
            _, cursor = await second.images.events_since(None)
            assert await first.images.delete(theirs.id, doomed.id) is None
            deleted = await first.images.delete(mine.id, doomed.id)
            assert deleted is not None and deleted.deleted_at is not None
            assert TIMESTAMP_RE.match(deleted.deleted_at)
            assert deleted == replace(doomed, deleted_at=deleted.deleted_at)
            assert await first.images.delete(mine.id, doomed.id) is None  # once
            for store in (first.images, second.images):
                assert await store.get(mine.id, doomed.id) is None
                assert await store.get_public(doomed.id) == deleted
                assert await store.live_images() == [kept]
                assert await store.live_digests() == {kept.sha256}
                assert await store.folders(mine.id) == ["f"]
                listed = await store.list_page(
                    mine.id, folder=None, search=None, page=1, page_size=10
                )
                assert (listed.images, listed.total) == ([kept], 1)
            events, after = await second.images.events_since(cursor)
            assert events == [Event(cursor + 1, IMAGE_DELETED, doomed.id)]
            assert after == cursor + 1
            assert await second.images.events_since(after) == ([], after)
            assert await first.check() == "ok"
        finally:
            await first.close()
            await second.close()

    run(scenario())


# -- the digest lock ------------------------------------------------------------------------


def test_locked_serialises_one_digest_across_instances(backend: Backend) -> None:
    """While one instance holds a digest's lock (an upload between its blob and its row),
    another instance's lock of that digest waits, and then sees the committed row."""

    async def scenario() -> None:
        first, second = await backend.open(), await backend.open()
        try:
            mine = await first.keys.ensure_tenant("mine")
            order: list[str] = []
            first_holds, second_trying = asyncio.Event(), asyncio.Event()

            async def upload() -> ImageRecord:
                async with first.images.locked(sha(1)) as tx:
                    first_holds.set()
                    assert not await tx.in_use()
                    record = await tx.insert(new_image(mine, 1))
                    assert await tx.in_use()  # its own, uncommitted row
                    await second_trying.wait()
                    await asyncio.sleep(0.3)  # time for a broken lock to let it in
                    order.append("upload commits")
                return record

            async def delete_check() -> bool:
                await first_holds.wait()
                second_trying.set()
                async with second.images.locked(sha(1)) as tx:
                    order.append("check runs")
                    return await tx.in_use()

            record, in_use = await asyncio.gather(upload(), delete_check())
            assert order == ["upload commits", "check runs"]
            assert in_use is True
            assert await second.images.get(mine.id, record.id) == record
            async with second.images.locked(sha(2)) as tx:
                assert await tx.in_use() is False
        finally:
            await first.close()
            await second.close()

    run(scenario())


def test_locked_rolls_back_on_error(backend: Backend) -> None:
    async def scenario() -> None:
        metadata = await backend.open()
        try:
            mine = await metadata.keys.ensure_tenant("mine")
            with pytest.raises(RuntimeError, match="blob store failed"):
                async with metadata.images.locked(sha(1)) as tx:
                    await tx.insert(new_image(mine, 1))
                    raise RuntimeError("blob store failed")
            assert await metadata.images.live_images() == []
            listed = await metadata.images.list_page(
                mine.id, folder=None, search=None, page=1, page_size=10
            )
            assert (listed.images, listed.total) == ([], 0)
            record = await insert(metadata, new_image(mine, 1))  # the lock is free again
            assert await metadata.images.live_images() == [record]
        finally:
            await metadata.close()

    run(scenario())


# -- search ---------------------------------------------------------------------------------

SEARCH_CORPUS = [
    ("100%_off.png", "Sale: 100% off_today"),
    ("back\\slash.png", "a\\b and c_d"),
    ("Straße.png", "GROSS"),
    ("glass.png", "SS"),
    ("\u00b5-chart.png", "micro sign"),
    ("ΣΊΣΥΦΟΣ.png", "ς final sigma"),
    ("İstanbul.jpg", "\u0131I dotless"),
    ("ﬁle.png", "ligature"),
    ("日本語のテキスト.png", "😀 emoji 😀"),
    ("\u212a-kelvin.png", "Å angstrom \u212b"),
    ("ǅemal.png", "titlecase ǈ"),
    ("plain.png", ""),
    ("ab.png", "  two  spaces"),
]

SEARCH_NEEDLES = [
    "100%", "%", "_", "0%_", "%_o", "\\", "a\\b", "c_d", "ß", "SS", "ss", "STRASSE", "straße",
    "µ", "\u039c", "\u03bc-CH", "\u03c3", "Σ", "ς", "ΣΊΣ", "i", "İ", "\u0131", "ist",
    "fi", "ﬁ", "FI",
    "日本", "日", "語のテ", "😀", "EMOJI 😀", "k", "\u212a", "kel", "å", "Å", "ǆ", "ǅE", "Ǆ",
    "p", "pl", "plain", "  ", "two  s", " two", ".png", "x", "zzz", "a",
]  # fmt: skip


def reference_search(records: list[ImageRecord], needle: str) -> list[str]:
    """The contract: a literal substring of the filename or alt text, both case-folded by
    simple_fold; newest first."""
    folded = simple_fold(needle)
    found = [
        r for r in records if folded in simple_fold(r.filename) or folded in simple_fold(r.alt_text)
    ]
    return [r.id for r in sorted(found, key=lambda r: r.seq, reverse=True)]


def test_search_matches_the_reference_on_tricky_text(backend: Backend) -> None:
    async def scenario() -> None:
        metadata = await backend.open()
        try:
            mine = await metadata.keys.ensure_tenant("mine")
            theirs = await metadata.keys.ensure_tenant("theirs")
            records = [
                await insert(metadata, new_image(mine, n, filename=name, alt_text=alt))
                for n, (name, alt) in enumerate(SEARCH_CORPUS)
            ]
            await insert(metadata, new_image(theirs, "t", filename="100%_off.png"))
            failures = []
            for needle in SEARCH_NEEDLES:
                got = await metadata.images.list_page(
                    mine.id, folder=None, search=needle, page=1, page_size=100
                )
                expected = reference_search(records, needle)
                if ([r.id for r in got.images], got.total) != (expected, len(expected)):
                    failures.append(needle)
            assert failures == []
        finally:
            await metadata.close()

    run(scenario())


SEARCH_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(
            "abcXYZ019 -_%\\\"*^():.,'éÉàÀçÇœŒøØåÅ日本😀ßẞﬁµ"
            "\u03a3\u03c3\u03c2\u0391\u03a9\u03c9\u0416\u0436\u0130\u0131\u212a\u212b\u01c5"
        ),
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")),
    ),
    min_size=1,
    max_size=30,
)


@dataclass
class SearchLibrary:
    loop: asyncio.AbstractEventLoop
    metadata: Metadata
    tenant: Tenant
    records: list[ImageRecord]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


@pytest.fixture
def search_library(backend: Backend) -> Iterator[SearchLibrary]:
    """One store for all of a property test's examples, which add to it one by one."""
    loop = asyncio.new_event_loop()
    metadata = loop.run_until_complete(backend.open())
    tenant = loop.run_until_complete(metadata.keys.ensure_tenant("t"))
    yield SearchLibrary(loop, metadata, tenant, [])
    loop.run_until_complete(metadata.close())
    loop.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_search_matches_the_reference_on_random_text(
    search_library: SearchLibrary, data: st.DataObject
) -> None:
    """Random names and alt texts, searched for a random piece of one of them, its case
    flipped here and there, or for unrelated text: exactly the reference's answer, over
    every image added so far."""
    lib = search_library
    name, alt = data.draw(SEARCH_TEXT), data.draw(SEARCH_TEXT)
    new = new_image(lib.tenant, len(lib.records), filename=name, alt_text=alt)
    lib.records.append(lib.run(insert(lib.metadata, new)))
    source = data.draw(st.sampled_from([name, alt]))
    start = data.draw(st.integers(0, len(source) - 1))
    end = data.draw(st.integers(start + 1, min(len(source), start + 8)))
    flips = data.draw(st.lists(st.booleans(), min_size=end - start, max_size=end - start))
    piece = "".join(
        (c.swapcase() if len(c.swapcase()) == 1 else c) if flip else c
        for c, flip in zip(source[start:end], flips, strict=True)
    )
    needle = data.draw(st.one_of(st.just(piece), SEARCH_TEXT))
    got = lib.run(
        lib.metadata.images.list_page(
            lib.tenant.id, folder=None, search=needle, page=1, page_size=1000
        )
    )
    expected = reference_search(lib.records, needle)
    assert ([r.id for r in got.images], got.total) == (expected, len(expected)), needle


# -- keys -----------------------------------------------------------------------------------


def test_first_key_is_created_once_however_many_start_together(backend: Backend) -> None:
    async def scenario() -> None:
        # Eight instances open a new database (migrating it) and ask for the first key at
        # the same moment.
        async def start() -> tuple[Metadata, Any]:
            metadata = await backend.open()
            return metadata, await metadata.keys.create_first_key("default")

        started = await asyncio.gather(*(start() for _ in range(8)))
        try:
            created = [key for _, key in started if key is not None]
            assert len(created) == 1
            metadata = started[0][0]
            assert [(k.id, k.tenant, k.revoked_at) for k in await metadata.keys.list_keys()] == [
                (created[0].key_id, "default", None)
            ]
            assert await metadata.keys.tenant_count() == 1
            tenant = await started[-1][0].keys.authenticate(created[0].key)
            assert tenant is not None and tenant.name == "default"
            assert await metadata.keys.create_first_key("default") is None
        finally:
            for metadata, _ in started:
                await metadata.close()

    run(scenario())


def test_keys_authenticate_and_a_revocation_is_seen_by_another_instance(
    backend: Backend,
) -> None:
    async def scenario() -> None:
        first, second = await backend.open(), await backend.open()
        try:
            assert await first.keys.ensure_tenant("a") == await second.keys.ensure_tenant("a")
            key = await first.keys.create_key("a")
            other = await first.keys.create_key("b")
            assert (key.tenant, other.tenant) == ("a", "b")
            assert key.key.startswith(f"pk_{key.key_id}_")
            tenant_a = await second.keys.authenticate(key.key)
            assert tenant_a == await first.keys.ensure_tenant("a")
            assert await second.keys.tenant_count() == 2
            wrong_secret = key.key[:-1] + ("A" if key.key[-1] != "A" else "B")
            for bad in (wrong_secret, "pk_short", "", key.key + "x", "Bearer " + key.key):
                assert await second.keys.authenticate(bad) is None, bad
            _, cursor = await second.images.events_since(None)
            assert await first.keys.revoke(key.key_id) is True
            assert await first.keys.revoke(key.key_id) is False  # once
            assert await first.keys.revoke("nosuchkey0000000") is False
            # Read per request: the other instance refuses it at once.
            assert await second.keys.authenticate(key.key) is None
            assert await second.keys.authenticate(other.key) is not None
            events, _ = await second.images.events_since(cursor)
            assert events == [Event(cursor + 1, KEY_REVOKED, key.key_id)]
            listed = {k.id: k for k in await second.keys.list_keys()}
            assert sorted(listed) == sorted([key.key_id, other.key_id])
            revoked = listed[key.key_id]
            assert (revoked.tenant, revoked.last_used_at is not None) == ("a", True)
            assert revoked.revoked_at is not None and TIMESTAMP_RE.match(revoked.revoked_at)
            assert listed[other.key_id].revoked_at is None
        finally:
            await first.close()
            await second.close()

    run(scenario())


# -- state ----------------------------------------------------------------------------------


def test_state_is_shared_and_overwritten(backend: Backend) -> None:
    async def scenario() -> None:
        first, second = await backend.open(), await backend.open()
        try:
            assert await first.images.state("thumbnail_version") is None
            await first.images.set_state("thumbnail_version", "1")
            await second.images.set_state("thumbnail_version", "2")
            await first.images.set_state("other", "x")
            assert await first.images.state("thumbnail_version") == "2"
            assert await second.images.state("other") == "x"
        finally:
            await first.close()
            await second.close()

    run(scenario())


def test_events_reach_a_waiting_instance(backend: Backend) -> None:
    """An instance waiting for events wakes up (by notification or by its poll) and reads
    another's delete; its wait is bounded even when nothing happens."""

    async def scenario() -> None:
        first, second = await backend.open(), await backend.open()
        try:
            mine = await first.keys.ensure_tenant("mine")
            record = await insert(first, new_image(mine, 1))
            _, cursor = await second.images.events_since(None)
            await second.images.wait_for_events(0.05)  # returns: nothing to wait for
            seen: list[Event] = []

            async def follow() -> None:
                nonlocal cursor
                while not seen:
                    await second.images.wait_for_events(1.0)
                    events, cursor = await second.images.events_since(cursor)
                    seen.extend(events)

            follower = asyncio.create_task(follow())
            await asyncio.sleep(0.05)
            await first.images.delete(mine.id, record.id)
            await asyncio.wait_for(follower, timeout=30)
            assert seen == [Event(cursor, IMAGE_DELETED, record.id)]
        finally:
            await first.close()
            await second.close()

    run(scenario())


# -- copying a library (pictor migrate) ------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A second, empty library, on each backend in turn (migrate: any backend to any)."""
    if request.param == "sqlite":
        path = tmp_path / "target" / "pictor.db"
        path.parent.mkdir()
        return Backend("sqlite", lambda: open_sqlite(path))
    server = request.getfixturevalue("postgres_server")
    server.start()
    url = server.create_database()
    return Backend("postgres", lambda: open_postgres(url))


def test_export_and_import_copy_a_library_to_any_backend(backend: Backend, target: Backend) -> None:
    async def scenario() -> None:
        source, copy = await backend.open(), await target.open()
        try:
            first_key = await source.keys.create_key("a")
            revoked = await source.keys.create_key("b")
            await source.keys.authenticate(first_key.key)  # last_used_at set
            await source.keys.revoke(revoked.key_id)
            tenants = {t.name: t for t in await source.keys.list_tenants()}
            assert sorted(tenants) == ["a", "b"]
            made = []
            for n in range(5):
                tenant = tenants["ab"[n % 2]]
                alt = f"Été n°{n}"
                made.append(await insert(source, new_image(tenant, n % 4, alt_text=alt)))
            await source.images.update(tenants["a"].id, made[0].id, {"folder": "moved"})
            await source.images.delete(tenants["b"].id, made[1].id)

            # Keys first (they bring the tenants, by name), then images in pages.
            await copy.keys.import_keys(await source.keys.export_keys())
            mapped = {t.name: t.id for t in await copy.keys.list_tenants()}
            names = {t.id: t.name for t in tenants.values()}
            exported: list[ImageRecord] = []
            while page := await source.images.export_images(exported[-1].seq if exported else 0, 2):
                exported += page
                await copy.images.import_images(
                    [replace(r, tenant_id=mapped[names[r.tenant_id]]) for r in page]
                )
            assert [r.id for r in exported] == [r.id for r in made]  # tombstone included

            async def library(metadata: Metadata) -> dict[str, Any]:
                ids = {t.name: t.id for t in await metadata.keys.list_tenants()}
                listed = {}
                for name, tenant_id in ids.items():
                    page = await metadata.images.list_page(
                        tenant_id, folder=None, search="été", page=1, page_size=10
                    )
                    listed[name] = (
                        [replace(r, seq=0, tenant_id=0) for r in page.images],
                        page.total,
                        await metadata.images.folders(tenant_id),
                    )
                public = [await metadata.images.get_public(r.id) for r in made]
                return {
                    "listed": listed,
                    "public": [
                        None if r is None else replace(r, seq=0, tenant_id=0) for r in public
                    ],
                    "keys": await metadata.keys.export_keys(),
                    "digests": await metadata.images.live_digests(),
                }

            expected = await library(source)
            assert await library(copy) == expected
            tenant = await copy.keys.authenticate(first_key.key)
            assert tenant is not None and tenant.name == "a"
            assert await copy.keys.authenticate(revoked.key) is None

            # Run again after changes at the source: labels and deletions follow, once.
            _, cursor = await copy.images.events_since(None)
            await source.images.update(tenants["a"].id, made[2].id, {"alt_text": "Summer"})
            await source.images.delete(tenants["a"].id, made[4].id)
            again = await source.images.export_images(0, 100)
            await copy.images.import_images(
                [replace(r, tenant_id=mapped[names[r.tenant_id]]) for r in again]
            )
            await copy.keys.import_keys(await source.keys.export_keys())
            assert await library(copy) == await library(source)
            events, _ = await copy.images.events_since(cursor)
            assert [(e.kind, e.subject) for e in events] == [(IMAGE_DELETED, made[4].id)]
            assert await copy.check() == "ok"
        finally:
            await source.close()
            await copy.close()

    run(scenario())


def test_a_nul_in_an_id_or_filter_matches_nothing(backend: Backend) -> None:
    """Ids come from URL paths and filters from query strings, unvalidated: a NUL there
    (which PostgreSQL text cannot hold) finds nothing, on every backend."""

    async def scenario() -> None:
        metadata = await backend.open()
        try:
            mine = await metadata.keys.ensure_tenant("mine")
            record = await insert(metadata, new_image(mine, 1, folder="f"))
            odd = record.id + "\x00"
            assert await metadata.images.get(mine.id, odd) is None
            assert await metadata.images.get_public(odd) is None
            assert await metadata.images.update(mine.id, odd, {"folder": "g"}) is None
            assert await metadata.images.delete(mine.id, odd) is None
            assert await metadata.keys.revoke("a\x00b") is False
            for filters in ({"folder": "f\x00"}, {"sha256": "\x00"}):
                page = await metadata.images.list_page(
                    mine.id, search=None, page=1, page_size=10, **{"folder": None, **filters}
                )
                assert (page.images, page.total) == ([], 0)
            assert await metadata.images.live_images() == [record]
        finally:
            await metadata.close()

    run(scenario())
