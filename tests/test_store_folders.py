"""The store methods behind folders and the list's sorts, one suite for every backend
(SQLite, PostgreSQL), against the real database."""

from __future__ import annotations

from appliance.store.interface import FolderCount, FolderRename
from tests.test_store_contract import Backend, backend, insert, new_image, run  # noqa: F401


def test_folders_created_renamed_merged_deleted(backend: Backend) -> None:  # noqa: F811
    async def scenario() -> None:
        metadata = await backend.open()
        images = metadata.images
        try:
            me = await metadata.keys.ensure_tenant("me")
            other = await metadata.keys.ensure_tenant("other")
            a = await insert(metadata, new_image(me, 1, folder="news"))
            await insert(metadata, new_image(me, 2, folder="news"))
            await insert(metadata, new_image(me, 3, folder="Newsletters"))
            await insert(metadata, new_image(other, 4, folder="news"))
            assert await images.create_folder(me.id, "Drafts/2026")
            assert not await images.create_folder(me.id, "Drafts/2026")
            assert not await images.create_folder(me.id, "news")  # in use: it exists
            assert not await images.create_folder(me.id, "bad\x00name")
            assert await images.folder_counts(me.id) == [
                FolderCount("Drafts/2026", 0),
                FolderCount("Newsletters", 1),
                FolderCount("news", 2),
            ]
            assert await images.live_count(me.id) == 3
            assert await images.folders(me.id) == ["Newsletters", "news"]
            # Merge news into Newsletters: both of mine move, the other tenant's stay.
            assert await images.rename_folder(me.id, "news", "Newsletters") == FolderRename(
                "Newsletters", 3, 2, True
            )
            moved = await images.get(me.id, a.id)
            assert moved is not None and moved.folder == "Newsletters"
            assert await images.folder_counts(me.id) == [
                FolderCount("Drafts/2026", 0),
                FolderCount("Newsletters", 3),
            ]
            assert await images.folder_counts(other.id) == [FolderCount("news", 1)]
            assert await images.rename_folder(me.id, "news", "x") is None
            assert await images.rename_folder(me.id, "bad\x00", "x") is None
            # A created folder keeps existing under its new name.
            assert await images.rename_folder(me.id, "Drafts/2026", "Drafts") == FolderRename(
                "Drafts", 0, 0, False
            )
            assert await images.delete_folder(me.id, "Newsletters") == 3
            assert await images.delete_folder(me.id, "Newsletters") is None
            assert await images.delete_folder(me.id, "Drafts") == 0
            assert await images.folder_counts(me.id) == []
            assert await images.live_count(me.id) == 3
            kept = await images.get(me.id, a.id)
            assert kept is not None and kept.folder is None
        finally:
            await metadata.close()

    run(scenario())


def test_sorts_and_missing_alt_text(backend: Backend) -> None:  # noqa: F811
    async def scenario() -> None:
        metadata = await backend.open()
        images = metadata.images
        try:
            me = await metadata.keys.ensure_tenant("me")
            rows = [
                ("beta.png", 300, "B"),
                ("Alpha.png", 100, ""),
                ("gamma.png", 900, ""),
                ("alpha.png", 200, "A"),
                ("Émile.png", 500, ""),
            ]
            for n, (name, size, alt) in enumerate(rows):
                await insert(
                    metadata, new_image(me, n, filename=name, size_bytes=size, alt_text=alt)
                )

            async def names(sort: str, **kw: bool) -> list[str]:
                page = await images.list_page(
                    me.id, folder=None, search=None, page=1, page_size=10, sort=sort, **kw
                )
                return [r.filename for r in page.images]

            assert await names("newest") == [
                "Émile.png", "alpha.png", "gamma.png", "Alpha.png", "beta.png"
            ]
            assert await names("oldest") == [
                "beta.png", "Alpha.png", "gamma.png", "alpha.png", "Émile.png"
            ]
            # ASCII letters folded, then code points; ties in upload order.
            assert await names("name") == [
                "Alpha.png", "alpha.png", "beta.png", "gamma.png", "Émile.png"
            ]
            assert await names("size") == [
                "gamma.png", "Émile.png", "beta.png", "alpha.png", "Alpha.png"
            ]
            missing = await images.list_page(
                me.id, folder=None, search=None, page=1, page_size=2, sort="name",
                missing_alt_text=True,
            )
            assert [r.filename for r in missing.images] == ["Alpha.png", "gamma.png"]
            assert missing.total == 3
        finally:
            await metadata.close()

    run(scenario())
