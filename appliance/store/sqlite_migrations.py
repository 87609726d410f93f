"""The SQLite schema as ordered, named steps. Each runs once, inside a transaction, and is
recorded in the `migrations` table. Append new steps; never edit one that has shipped."""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_tenants_and_keys",
        """
        CREATE TABLE tenants (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        );
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,                 -- public part of the key, shown in `keys list`
            tenant_id INTEGER NOT NULL REFERENCES tenants(id),
            secret_sha256 BLOB NOT NULL,         -- the secret part is stored only as a hash
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at TEXT
        );
        """,
    ),
    (
        "0002_images",
        """
        CREATE TABLE images (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- upload order; never reused
            id TEXT NOT NULL UNIQUE,                 -- public, unguessable
            tenant_id INTEGER NOT NULL REFERENCES tenants(id),
            filename TEXT NOT NULL,
            alt_text TEXT NOT NULL DEFAULT '',
            folder TEXT,
            mime_type TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            deleted_at TEXT                          -- tombstone: the proxy answers 410 for ever
        );
        CREATE INDEX images_live_by_tenant ON images(tenant_id, seq)
            WHERE deleted_at IS NULL;
        CREATE INDEX images_live_by_folder ON images(tenant_id, folder, seq)
            WHERE deleted_at IS NULL;
        CREATE INDEX images_live_by_blob ON images(sha256) WHERE deleted_at IS NULL;
        """,
    ),
    (
        "0003_search_index",
        # Literal substring search that does not scan every row: FTS5's trigram tokenizer
        # answers any substring of three or more characters from the index. Only live
        # images are indexed; an external-content row must only be 'delete'd if indexed.
        """
        CREATE VIRTUAL TABLE images_fts USING fts5(
            filename, alt_text, content='images', content_rowid='seq', tokenize='trigram'
        );
        CREATE TRIGGER images_fts_insert AFTER INSERT ON images WHEN new.deleted_at IS NULL
        BEGIN
            INSERT INTO images_fts(rowid, filename, alt_text)
                VALUES (new.seq, new.filename, new.alt_text);
        END;
        CREATE TRIGGER images_fts_update AFTER UPDATE OF filename, alt_text, deleted_at ON images
        BEGIN
            INSERT INTO images_fts(images_fts, rowid, filename, alt_text)
                SELECT 'delete', old.seq, old.filename, old.alt_text
                WHERE old.deleted_at IS NULL;
            INSERT INTO images_fts(rowid, filename, alt_text)
                SELECT new.seq, new.filename, new.alt_text
                WHERE new.deleted_at IS NULL;
        END;
        """,
    ),
    (
        "0004_live_counts",
        # The unfiltered list's total without counting a million index entries per request.
        """
        CREATE TABLE tenant_stats (
            tenant_id INTEGER PRIMARY KEY REFERENCES tenants(id),
            live_images INTEGER NOT NULL
        );
        INSERT INTO tenant_stats (tenant_id, live_images)
            SELECT tenant_id, count(*) FROM images WHERE deleted_at IS NULL GROUP BY tenant_id;
        CREATE TRIGGER tenant_stats_insert AFTER INSERT ON images WHEN new.deleted_at IS NULL
        BEGIN
            INSERT INTO tenant_stats (tenant_id, live_images) VALUES (new.tenant_id, 1)
                ON CONFLICT (tenant_id) DO UPDATE SET live_images = live_images + 1;
        END;
        CREATE TRIGGER tenant_stats_delete AFTER UPDATE OF deleted_at ON images
            WHEN old.deleted_at IS NULL AND new.deleted_at IS NOT NULL
        BEGIN
            UPDATE tenant_stats SET live_images = live_images - 1
                WHERE tenant_id = old.tenant_id;
        END;
        """,
    ),
    (
        "0005_folder_counts",
        # /v3/images/folders without walking every live image's folder entry (48 ms at a
        # million): live images per (tenant, folder), kept by triggers.
        """
        CREATE TABLE folder_stats (
            tenant_id INTEGER NOT NULL REFERENCES tenants(id),
            folder TEXT NOT NULL,
            live_images INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, folder)
        ) WITHOUT ROWID;
        INSERT INTO folder_stats (tenant_id, folder, live_images)
            SELECT tenant_id, folder, count(*) FROM images
            WHERE deleted_at IS NULL AND folder IS NOT NULL GROUP BY tenant_id, folder;
        CREATE TRIGGER folder_stats_insert AFTER INSERT ON images
            WHEN new.deleted_at IS NULL AND new.folder IS NOT NULL
        BEGIN
            INSERT INTO folder_stats (tenant_id, folder, live_images)
                VALUES (new.tenant_id, new.folder, 1)
                ON CONFLICT (tenant_id, folder) DO UPDATE SET live_images = live_images + 1;
        END;
        CREATE TRIGGER folder_stats_update AFTER UPDATE OF folder, deleted_at ON images
        BEGIN
            UPDATE folder_stats SET live_images = live_images - 1
                WHERE old.deleted_at IS NULL AND old.folder IS NOT NULL
                AND tenant_id = old.tenant_id AND folder = old.folder;
            INSERT INTO folder_stats (tenant_id, folder, live_images)
                SELECT new.tenant_id, new.folder, 1
                WHERE new.deleted_at IS NULL AND new.folder IS NOT NULL
                ON CONFLICT (tenant_id, folder) DO UPDATE SET live_images = live_images + 1;
            DELETE FROM folder_stats WHERE live_images <= 0
                AND tenant_id = old.tenant_id AND folder = old.folder;
        END;
        """,
    ),
    (
        "0006_appliance_state",
        # Facts about the data directory itself, e.g. which version made its thumbnails.
        """
        CREATE TABLE appliance_state (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        """,
    ),
    (
        "0007_events",
        # What other processes must hear of (an image deleted, a key revoked), so that they
        # forget what they cached: they read it from here, by sequence number.
        """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            subject TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        """,
    ),
    (
        "0008_search_folded_by_us",
        # FTS5 folds case with SQLite's own, older Unicode tables, so a long search and a
        # short one (folded by `pictor_fold`) could disagree, e.g. on U+A7C4. The index now
        # holds text folded by `pictor_fold` and matches it case-sensitively, and searches
        # are folded the same way: one fold for every search, here and in PostgreSQL.
        """
        DROP TRIGGER images_fts_insert;
        DROP TRIGGER images_fts_update;
        DROP TABLE images_fts;
        CREATE VIRTUAL TABLE images_fts USING fts5(
            filename, alt_text, content='images', content_rowid='seq',
            tokenize='trigram case_sensitive 1'
        );
        INSERT INTO images_fts(rowid, filename, alt_text)
            SELECT seq, pictor_fold(filename), pictor_fold(alt_text) FROM images
            WHERE deleted_at IS NULL;
        CREATE TRIGGER images_fts_insert AFTER INSERT ON images WHEN new.deleted_at IS NULL
        BEGIN
            INSERT INTO images_fts(rowid, filename, alt_text)
                VALUES (new.seq, pictor_fold(new.filename), pictor_fold(new.alt_text));
        END;
        CREATE TRIGGER images_fts_update AFTER UPDATE OF filename, alt_text, deleted_at ON images
        BEGIN
            INSERT INTO images_fts(images_fts, rowid, filename, alt_text)
                SELECT 'delete', old.seq, pictor_fold(old.filename), pictor_fold(old.alt_text)
                WHERE old.deleted_at IS NULL;
            INSERT INTO images_fts(rowid, filename, alt_text)
                SELECT new.seq, pictor_fold(new.filename), pictor_fold(new.alt_text)
                WHERE new.deleted_at IS NULL;
        END;
        """,
    ),
    (
        "0009_fetch_counts",
        # Fetches through /i/ per image, UTC day and client family. Nodes flush their
        # in-memory counts as additive upserts (fetches = fetches + n), so counts from any
        # number of nodes and restarts add up. Rows outlive a delete (the image's stats are
        # 404 then, like the image); they are a few bytes per image and day.
        """
        CREATE TABLE image_fetches (
            image_id TEXT NOT NULL,
            day TEXT NOT NULL,                  -- YYYY-MM-DD, UTC
            client TEXT NOT NULL,               -- gmail, yahoo, outlook, apple, other
            fetches INTEGER NOT NULL,
            last_fetched_at TEXT NOT NULL,      -- RFC 3339 UTC
            PRIMARY KEY (image_id, day, client)
        ) WITHOUT ROWID;
        """,
    ),
)
