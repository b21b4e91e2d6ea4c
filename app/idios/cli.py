"""The `idios` command: serve, api, worker, dump, restore, duplicates, hash-key, openapi."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from idios.config import Settings, default_credential_problems


def _logging(settings: Settings) -> None:
    from idios.logs import configure

    configure(settings.log_level, settings.log_format)


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks run: uvicorn re-raises the signal it
    caught once it has shut down, and the default action would kill us before the embedded
    Milvus is stopped."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def serve(settings: Settings) -> None:
    """API, in-process worker and embedded Milvus in one process: no broker needed."""
    from idios import heap
    from idios.api.app import create_app
    from idios.embedded import milvus_uri
    from idios.jobs import JobRunner
    from idios.store import Store
    from idios.transport.local import LocalTransport

    _refuse_bad_front_door(settings)  # before Milvus starts
    heap.limit_arenas()  # before the job threads start allocating
    with milvus_uri(settings.milvus_uri, settings.data_dir) as uri:
        store = Store(
            uri,
            token=settings.milvus_token,
            prefix=settings.collection_prefix,
            search_consistency=settings.milvus_consistency,
        )
        app = create_app(settings, LocalTransport(JobRunner(settings, store)))
        _exit_on_sigterm()
        logging.getLogger("idios").info("serving on http://%s:%d (docs at /docs)", settings.host, settings.port)
        try:
            _serve_http(app, settings)
        finally:
            store.close()


def _refuse_default_credentials(settings: Settings, *, milvus: bool) -> None:
    problems = default_credential_problems(settings, broker=True, milvus=milvus)
    if problems:
        sys.exit("refusing to start: " + "; ".join(problems) + " (or IDIOS_ALLOW_DEFAULT_CREDENTIALS=true)")


def _refuse_bad_front_door(settings: Settings) -> None:
    """Exit with one line for API keys or allowed hosts that are set but unusable (a keys file with
    no key must not start an open API)."""
    from idios.api.guard import host_patterns
    from idios.auth import ConfigError, KeyRing

    try:
        KeyRing.load(settings.api_keys, settings.api_keys_file)
        host_patterns(settings)
    except ConfigError as exc:
        sys.exit(f"refusing to start: {exc}")


def api(settings: Settings) -> None:
    """The stateless HTTP API; jobs go to workers through RabbitMQ."""
    _refuse_default_credentials(settings, milvus=False)
    _refuse_bad_front_door(settings)
    from idios.api.app import create_app
    from idios.transport.amqp import AmqpTransport

    app = create_app(settings, AmqpTransport(settings))
    _exit_on_sigterm()
    _serve_http(app, settings)


def _serve_http(app: Any, settings: Settings) -> None:
    import uvicorn

    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's lines go through the root logger's handler (`idios.logs`), in its format
        # uvicorn's own 5 s equals httpx's keep-alive expiry and is far below a proxy's (Traefik: 90 s
        # unless set): a client could send a request just as the API closes the connection, and lose it.
        timeout_keep_alive=settings.keep_alive,  # type: ignore[arg-type]  # typed int, float works in uvicorn
    )


def worker(settings: Settings) -> None:
    from idios import heap
    from idios.embedded import milvus_uri
    from idios.worker import run_worker

    heap.limit_arenas()  # before the job threads start allocating

    _refuse_default_credentials(settings, milvus=True)
    with milvus_uri(settings.milvus_uri, settings.data_dir) as uri:
        run_worker(settings.model_copy(update={"milvus_uri": uri}))


API_HELP = "API base url (default: IDIOS_API, else http://127.0.0.1:4213); the key is IDIOS_API_KEY"


def _everyday_commands(commands: Any) -> None:
    """`idios add`, `idios search`, `idios reindex` (idios.commands)."""
    raw = argparse.RawDescriptionHelpFormatter
    add = commands.add_parser(
        "add",
        help="add every url of a file (text, CSV or JSON Lines) to MODEL",
        formatter_class=raw,
        description="Sends the urls of FILE to MODEL in batches (add_bulk), several at once, with a progress bar.\n"
        "FILE: .txt (a url a line), .csv (a 'url' column; the other columns become metadata) or .jsonl\n"
        '({"url": ..., "metadata": {...}} a line). Urls that fail go to --failures with their reason.\n\n'
        "examples:\n"
        "  idios add vit_b32 urls.txt\n"
        "  idios add copydetect catalogue.csv --concurrency 8 --failures rejected.jsonl\n"
        "  idios add vit_b32 urls.txt --resume        # after an interruption: skips what was done",
    )
    add.add_argument("model")
    add.add_argument("file", type=Path)
    _batch_options(add, resume="continue from FILE.MODEL.checkpoint")
    search = commands.add_parser(
        "search",
        help="search MODEL by an image url, an image file or a text",
        formatter_class=raw,
        description="Prints the hits as a table (or --json).\n\nexamples:\n"
        "  idios search vit_b32 https://example.com/cat.jpg\n"
        "  idios search copydetect photo.jpg --flip --limit 5\n"
        "  idios search vit_b32 --text 'a red bicycle' --json",
    )
    search.add_argument("model")
    search.add_argument("query", nargs="?", help="an image url (http:// or https://) or an image file")
    search.add_argument("--text", help="search by this text instead (CLIP models)")
    search.add_argument("--limit", type=int, default=10, help="hits (default %(default)s)")
    search.add_argument("--flip", action="store_true", help="also search the mirrored image")
    search.add_argument("--filter", help='metadata equalities as a JSON object, e.g. \'{"tags": "letter"}\'')
    search.add_argument("--json", action="store_true", help="the hits as JSON")
    search.add_argument("--api", help=API_HELP)
    reindex = commands.add_parser(
        "reindex",
        help="embed every url stored in FROM into TO too, with its metadata",
        formatter_class=raw,
        description="Walks FROM's stored urls (a page at a time) and adds each to TO with its metadata: the way\n"
        "to a new model without sending the urls again. Images are downloaded again.\n\nexamples:\n"
        "  idios reindex vit_b32 vit_l14\n"
        "  idios reindex vit_b32 copydetect --resume",
    )
    reindex.add_argument("source", metavar="FROM")
    reindex.add_argument("target", metavar="TO")
    _batch_options(reindex, resume="continue from the last url done (--state)")
    reindex.add_argument("--state", type=Path, help="checkpoint file (default .idios-reindex-FROM-TO.json)")


def _batch_options(command: argparse.ArgumentParser, *, resume: str) -> None:
    command.add_argument("--batch", type=int, default=64, help="urls a request (default %(default)s)")
    command.add_argument("--concurrency", type=int, default=4, help="requests in flight (default %(default)s)")
    command.add_argument("--resume", action="store_true", help=resume)
    command.add_argument("--failures", type=Path, default=Path("failed.jsonl"), help="default %(default)s")
    command.add_argument("--api", help=API_HELP)


def _run_everyday(args: argparse.Namespace) -> int:
    from idios import commands

    if args.command == "add":
        if not args.file.is_file():
            raise SystemExit(f"no such file: {args.file}")
        return commands.add(
            args.api,
            args.model,
            args.file,
            batch=args.batch,
            concurrency=args.concurrency,
            resume=args.resume,
            failures=args.failures,
        )
    if args.command == "search":
        if (args.query is None) == (args.text is None):
            raise SystemExit("give an image url or file, or --text, not both")
        return commands.search(
            args.api,
            args.model,
            args.query,
            args.text,
            limit=args.limit,
            flip=args.flip,
            filter=args.filter,
            as_json=args.json,
        )
    state = args.state or Path(f".idios-reindex-{args.source}-{args.target}.json")
    return commands.reindex(
        args.api,
        args.source,
        args.target,
        batch=args.batch,
        concurrency=args.concurrency,
        resume=args.resume,
        failures=args.failures,
        state=state,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="idios", description="Self-hosted reverse image search.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="API + in-process worker + embedded Milvus (one machine, no broker)")
    commands.add_parser("api", help="the HTTP API of a distributed deployment (IDIOS_AMQP_URL)")
    commands.add_parser("worker", help="a worker of a distributed deployment (IDIOS_AMQP_URL, IDIOS_MILVUS_URI)")
    for name, what in (
        ("dump", "write every entry of MODEL to DIR"),
        ("restore", "store the entries in DIR into MODEL"),
    ):
        sub = commands.add_parser(name, help=what)
        sub.add_argument("model")
        sub.add_argument("directory", type=Path)
        sub.add_argument("--api", help=API_HELP)
        sub.add_argument("--batch", type=int, default=1000, help="entries per request and per file")
    walk = commands.add_parser(
        "duplicates",
        help="write every group of copies in MODEL to a JSON Lines file",
        description="Walks MODEL's stored images through the API (POST /models/MODEL/duplicates) and writes one "
        "group of copies per line: {urls, similarity}. Example: idios duplicates copydetect --out copies.jsonl",
    )
    walk.add_argument("model")
    walk.add_argument("--out", type=Path, default=Path("duplicates.jsonl"), help="output file (default %(default)s)")
    walk.add_argument("--api", help=API_HELP)
    walk.add_argument(
        "--min-similarity", type=float, help="similarity from which images are copies (default: the model's)"
    )
    walk.add_argument("--page", type=int, default=100, help="stored urls examined per request (default %(default)s)")
    walk.add_argument("--after", help="resume after this url (a walk that stopped prints it), appending to --out")
    _everyday_commands(commands)
    keygen = commands.add_parser("hash-key", help="make an API key (or hash a given one) for IDIOS_API_KEYS")
    keygen.add_argument("key", nargs="?", help="the key to hash (default: a new random key)")
    keygen.add_argument("--scope", choices=["read", "write"], default="read")
    doc = commands.add_parser("openapi", help="write the static API reference and the settings table")
    doc.add_argument("--out", type=Path, default=Path("doc"), help="output directory (default %(default)s)")
    doc.add_argument(
        "--settings-table",
        type=Path,
        help="refresh the settings table between the markers of this page (default: OUT/configuration.md, "
        "when it exists)",
    )
    args = parser.parse_args(argv)

    try:
        settings = Settings()
    except ValidationError as exc:  # one line per bad setting, not a traceback (values are not echoed)
        names = ["IDIOS_" + "_".join(map(str, e["loc"])).upper() if e["loc"] else "settings" for e in exc.errors()]
        problems = "; ".join(f"{name}: {e['msg']}" for name, e in zip(names, exc.errors(), strict=True))
        sys.exit(f"invalid configuration: {problems}")
    _logging(settings)
    if args.command == "serve":
        serve(settings)
    elif args.command == "api":
        api(settings)
    elif args.command == "worker":
        worker(settings)
    elif args.command in ("dump", "restore"):
        from idios import backup

        action = backup.dump if args.command == "dump" else backup.restore
        sys.exit(action(args.api, args.model, args.directory, args.batch))
    elif args.command == "duplicates":
        from idios.duplicates import walk as walk_duplicates

        sys.exit(
            walk_duplicates(
                args.api, args.model, args.out, min_similarity=args.min_similarity, page=args.page, after=args.after
            )
        )
    elif args.command in ("add", "search", "reindex"):
        sys.exit(_run_everyday(args))
    elif args.command == "hash-key":
        from idios.auth import hash_key, new_key

        key = args.key or new_key()
        if not args.key:
            print(f"key:   {key}")
        print(f"entry: {args.scope}:{hash_key(key)}")
    elif args.command == "openapi":
        from idios.openapi import update_settings_table, write_reference

        for path in write_reference(Settings(_env_file=None), args.out):
            print(path)
        table = args.settings_table or args.out / "configuration.md"
        if args.settings_table or table.is_file():
            try:
                update_settings_table(table)
            except (OSError, ValueError) as exc:
                sys.exit(f"cannot refresh the settings table: {exc}")
            print(table)


if __name__ == "__main__":
    main()
