"""The command line: serve, keys create|list|revoke (the contract's stable interface), and the
admin tools verify and backup."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appliance import __version__, logs
from appliance.config import SETTINGS, ConfigError, Settings, env_defaults, load_settings
from appliance.errors import ImagingUnavailable, StorageUnavailable
from appliance.preflight import SQLiteUnavailable, check_sqlite

DB_NAME = "pictor.db"  # the embedded database's file in the data directory


def _parser() -> argparse.ArgumentParser:
    env = env_defaults()
    parser = argparse.ArgumentParser(
        prog="pictor", description="Pictor, the self-hosted image library appliance."
    )
    parser.add_argument("--version", action="version", version=f"pictor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the appliance")
    for setting in SETTINGS:
        serve.add_argument(
            setting.flag,
            dest=setting.name,
            default=env[setting.name],
            help=f"{setting.help} (env {setting.env}; default: {setting.default})",
        )

    # The other commands reach the same library: they take its location settings too.
    location = ("data_dir", "database", "blob_store", "s3_endpoint")
    storage = [s for s in SETTINGS if s.name in location]

    def add_data_dir(sub: argparse.ArgumentParser) -> None:
        for setting in storage:
            sub.add_argument(
                setting.flag,
                dest=setting.name,
                default=env[setting.name],
                help=f"{setting.help} (env {setting.env})",
            )

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    for name, help_text in (
        ("create", "create a key for a tenant (creating the tenant if new)"),
        ("list", "list keys (never the secrets)"),
        ("revoke", "revoke a key at once"),
    ):
        sub = keys.add_parser(name, help=help_text)
        add_data_dir(sub)
        if name == "create":
            sub.add_argument("--tenant", required=True, help="tenant name, e.g. default")
        if name == "revoke":
            sub.add_argument("key_id", metavar="KEY_ID", help="the id shown by `keys list`")

    _transfer_commands(commands)
    migrate = commands.add_parser(
        "migrate",
        help="copy the library to another pair of backends, resumably, while it serves",
    )
    add_data_dir(migrate)
    migrate.add_argument(
        "--to-database", required=True, help="sqlite or postgresql://USER:PASS@HOST:PORT/DB"
    )
    migrate.add_argument("--to-blob-store", required=True, help="file or s3://BUCKET[/PREFIX]")
    migrate.add_argument(
        "--to-data-dir",
        type=Path,
        default=None,
        help="the target's data directory, for a sqlite or file target (default: --data-dir)",
    )
    migrate.add_argument(
        "--to-s3-endpoint", default=None, help="the target's S3 endpoint (default: --s3-endpoint)"
    )

    sweep = commands.add_parser(
        "sweep", help="remove stored objects that no image uses (a crashed node's leftovers)"
    )
    add_data_dir(sweep)
    sweep.add_argument(
        "--grace-seconds",
        type=float,
        default=3600.0,
        help="leave objects younger than this alone (default 3600: an hour)",
    )

    for name, help_text in (
        ("verify", "re-hash every stored image against its record; exit 1 on any problem"),
        ("backup", "write a consistent copy of the library into a new directory"),
    ):
        sub = commands.add_parser(name, help=help_text)
        add_data_dir(sub)
        if name == "backup":
            sub.add_argument("dest", metavar="DEST", type=Path, help="a new or empty directory")
    return parser


def _transfer_commands(commands: Any) -> None:
    """import and export talk to a running appliance over HTTP (any node, local or not)."""

    def add_remote(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--url",
            default=os.environ.get("PICTOR_URL"),
            help="the appliance, e.g. http://127.0.0.1:8080 (env PICTOR_URL)",
        )
        sub.add_argument(
            "--key",
            default=os.environ.get("PICTOR_API_KEY"),
            help="an API key of the tenant (env PICTOR_API_KEY, which keeps it out of `ps`)",
        )
        sub.add_argument(
            "--concurrency",
            type=_positive,
            default=4,
            help="requests at a time (default: 4)",
        )

    imp = commands.add_parser(
        "import",
        help="upload every image under the paths through the API, skipping what is there",
    )
    imp.add_argument("paths", metavar="PATH", nargs="+", type=Path, help="files or directories")
    add_remote(imp)
    imp.add_argument("--folder", default=None, help="folder for files the manifest gives none")
    imp.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="CSV with columns path, alt_text, folder (and optionally filename), or an "
        "images.json from export (default: PATH/images.json if there is one)",
    )
    exp = commands.add_parser(
        "export", help="download every original and an images.json of their metadata"
    )
    exp.add_argument("dest", metavar="DEST", type=Path, help="a directory (made if missing)")
    add_remote(exp)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def _transfer(args: argparse.Namespace) -> int:
    from appliance import transfer

    if not args.url or not args.key:
        print("pictor: give --url and --key (or PICTOR_URL and PICTOR_API_KEY)", file=sys.stderr)
        return 2
    try:
        if args.command == "import":
            return transfer.run_import(
                args.paths,
                url=args.url,
                key=args.key,
                folder=args.folder,
                concurrency=args.concurrency,
                manifest=args.manifest,
            )
        return transfer.run_export(
            args.dest, url=args.url, key=args.key, concurrency=args.concurrency
        )
    except transfer.TransferError as exc:
        print(f"pictor {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pictor {args.command}: interrupted; run it again to resume", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure("text")
    if args.command in ("import", "export"):
        return _transfer(args)
    try:
        settings = load_settings(vars(args))
    except ConfigError as exc:
        print(f"pictor: {exc}", file=sys.stderr)
        return 2
    if settings.log_format != "text":
        logs.configure(settings.log_format)
    try:
        check_sqlite()  # before any command opens the database
        if args.command == "serve":
            return asyncio.run(_serve(settings))
        target = _migrate_target(args, settings) if args.command == "migrate" else None
        embedded = settings.database == "sqlite"
        db_path = settings.data_dir / DB_NAME
        creates = args.command == "keys" and args.keys_command == "create"
        if embedded and not creates and not db_path.exists():
            print(f"pictor: no database in {settings.data_dir}", file=sys.stderr)
            return 1
        if args.command == "backup" and (not embedded or settings.blob_store != "file"):
            print(
                "pictor: backup copies the embedded library (SQLite and the blob directory); "
                "use your database's and object store's own backups, or `migrate`",
                file=sys.stderr,
            )
            return 2
        if args.command in ("verify", "backup"):
            return asyncio.run(_admin(args, settings))
        if target is not None:
            return asyncio.run(_migrate(settings, target))
        if args.command == "sweep":
            return asyncio.run(_sweep(settings, args.grace_seconds))
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_keys(args, settings))
    except (ImagingUnavailable, SQLiteUnavailable) as exc:
        print(f"pictor: refusing to start: {exc}", file=sys.stderr)
        return 3
    except ConfigError as exc:
        print(f"pictor: {exc}", file=sys.stderr)
        return 2
    except StorageUnavailable as exc:
        print(f"pictor: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pictor: {exc}", file=sys.stderr)
        return 1


async def _serve(settings: Settings) -> int:
    from tornado.netutil import bind_sockets

    try:
        from appliance.app import start_appliance  # imports pyvips; keep `--help` fast
    except (ImportError, OSError) as exc:  # pyvips without its wheel's libvips, or none
        raise ImagingUnavailable(
            f"libvips could not be loaded ({exc}). Reinstall pyvips-binary."
        ) from exc

    # Handlers first: a signal that arrives while starting (right after the announcement,
    # say) must still stop cleanly, not interrupt start-up with the database open.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Bind before the data directory is opened: a port in use fails at once, cleanly.
    sockets = bind_sockets(settings.port, settings.host)
    try:
        appliance = await start_appliance(settings, sockets=sockets)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    await stop.wait()
    logging.getLogger("pictor").info("shutting down")
    await appliance.stop()
    return 0


async def _admin(args: argparse.Namespace, settings: Settings) -> int:
    from appliance import admin

    if args.command == "verify":
        report = await admin.verify(settings)
        for label in report.missing:
            print(f"MISSING  {label}")
        for label in report.corrupt:
            print(f"CORRUPT  {label}")
        print(
            f"checked {report.images} image(s) over {report.blobs} blob(s): "
            f"{len(report.missing)} missing, {len(report.corrupt)} corrupt; "
            f"database integrity: {report.integrity}"
        )
        return 0 if report.ok else 1
    result = await admin.backup(settings.data_dir, args.dest)
    print(
        f"backed up {result.images} image(s) in {result.blobs} blob(s) to {args.dest}"
        + (f"; {result.vanished} deleted meanwhile" if result.vanished else "")
    )
    return 0


def _migrate_target(args: argparse.Namespace, source: Settings) -> Settings:
    target = load_settings(
        {
            "data_dir": args.to_data_dir or source.data_dir,
            "database": args.to_database,
            "blob_store": args.to_blob_store,
            "s3_endpoint": args.to_s3_endpoint or source.s3_endpoint,
        }
    )
    same_db = target.database == source.database and (
        target.database != "sqlite" or target.data_dir.resolve() == source.data_dir.resolve()
    )
    same_blobs = target.blob_store == source.blob_store and (
        target.blob_store != "file" or target.data_dir.resolve() == source.data_dir.resolve()
    )
    if same_db or same_blobs:
        raise ConfigError("migrate: the target must be another database and another blob store")
    return target


async def _migrate(source_settings: Settings, target_settings: Settings) -> int:
    from appliance.backends import open_blobs, open_metadata
    from appliance.migrate import migrate

    target_settings.data_dir.mkdir(parents=True, exist_ok=True)
    source, source_blobs = await open_metadata(source_settings), open_blobs(source_settings)
    try:
        target, target_blobs = await open_metadata(target_settings), open_blobs(target_settings)
        try:
            report = await migrate(
                source, source_blobs, target, target_blobs, progress=lambda line: print(line)
            )
        finally:
            await target.close()
            await target_blobs.close()
    finally:
        await source.close()
        await source_blobs.close()
    for label in report.missing:
        print(f"MISSING  {label} (its blob is missing at the source)")
    print(
        f"migrated {report.tenants} tenant(s), {report.keys} key(s), {report.images} image(s) "
        f"({report.deleted} deleted); {report.blobs_copied} blob(s) copied, "
        f"{report.blobs_present} already there"
    )
    return 1 if report.missing else 0


async def _sweep(settings: Settings, grace_seconds: float) -> int:
    from appliance.app import close_services, open_services

    metadata, library, pools = await open_services(settings)
    try:
        # Not the scratch directory: a node serving this data directory owns its uploads.
        _, removed = await library.sweep(grace_seconds, scratch=False)
    finally:
        await close_services(metadata, library, pools)
    print(f"swept {removed} unused blob(s)")
    return 0


async def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.backends import open_metadata

    metadata = await open_metadata(settings)
    try:
        keys = metadata.keys
        if args.keys_command == "create":
            created = await keys.create_key(args.tenant)
            print(
                f"Created key {created.key_id} for tenant {created.tenant!r}. "
                "It is shown only this once:"
            )
            print(created.key)
        elif args.keys_command == "list":
            print(f"{'KEY_ID':<17} {'TENANT':<17} {'CREATED':<21} {'LAST_USED':<21} STATUS")
            for k in await keys.list_keys():
                status = f"revoked {k.revoked_at}" if k.revoked_at else "active"
                print(
                    f"{k.id:<17} {k.tenant:<17} {k.created_at:<21} "
                    f"{k.last_used_at or '-':<21} {status}"
                )
        else:
            if not await keys.revoke(args.key_id):
                print(f"pictor: no active key {args.key_id!r}", file=sys.stderr)
                return 1
            print(f"Revoked key {args.key_id}.")
        return 0
    finally:
        await metadata.close()
