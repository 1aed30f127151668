"""The `imagehook` command: serve | migrate | sweep | emulator | keys create NAME."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import httpx
import uvicorn

from app.client.generate import add_generate_command
from app.db.engine import create_engine
from app.db.migrate import upgrade
from app.deps import Deps, open_deps
from app.errors import NotConfigured, NotFound, ProviderError
from app.keys import NewKey, create_key, rotate_webhook_secret, set_limits
from app.providers.base import Balance
from app.reads.usage import summarize
from app.server import build_config
from app.settings import Settings, SettingsError
from app.tasks.retention import parse_age, purge
from app.tasks.sweeper import run_sweeper, sweep_once

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        args.run(args)
    except SettingsError as exc:
        sys.exit(f"imagehook: configuration error: {exc}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagehook", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway (and its sweeper)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-sweeper", action="store_true", help="leave sweeping to `imagehook sweep`")
    serve.add_argument(
        "--emulator", action="store_true", help="start the bundled Kie.ai emulator and use it (development)"
    )
    serve.add_argument("--emulator-port", type=int, default=8765)
    serve.set_defaults(run=cmd_serve)

    commands.add_parser("migrate", help="bring the database schema up to date").set_defaults(run=cmd_migrate)

    sweep = commands.add_parser("sweep", help="run the sweeper alone")
    sweep.add_argument("--once", action="store_true", help="one round, then exit")
    sweep.set_defaults(run=cmd_sweep)

    emulator = commands.add_parser("emulator", help="run the local Kie.ai emulator")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--api-key", default=os.environ.get("EMULATOR_API_KEY", "emulator-key"))
    emulator.add_argument("--hmac-key", default=os.environ.get("EMULATOR_HMAC_KEY"))
    emulator.add_argument("--kvid-api-key", default=os.environ.get("EMULATOR_KVID_API_KEY", "kvid-emulator-key"))
    emulator.set_defaults(run=cmd_emulator)

    keys = commands.add_parser("keys", help="manage client API keys")
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="create a key and print it (once)")
    create.add_argument("name")
    create.add_argument("--quiet", action="store_true", help="print only the key")
    create.set_defaults(run=cmd_keys_create)
    rotate = key_commands.add_parser(
        "rotate-webhook-secret", help="new webhook signing secret (old one signs 24 h more)"
    )
    rotate.add_argument("key_id", type=int)
    rotate.set_defaults(run=cmd_keys_rotate)
    add_limit_options(create)
    limits = key_commands.add_parser("limits", help="set a key's limits (0 removes one)")
    limits.add_argument("key_id", type=int)
    add_limit_options(limits)
    limits.set_defaults(run=cmd_keys_limits)

    usage = commands.add_parser("usage", help="tasks and credits per key, model or day")
    usage.add_argument("--key-id", type=int, help="one key (default: all)")
    usage.add_argument("--from", dest="start", help="ISO 8601 start (default: 30 days ago)")
    usage.add_argument("--to", dest="end", help="ISO 8601 end (default: now)")
    usage.add_argument("--group-by", choices=["key", "model", "day"], default="key")
    usage.set_defaults(run=cmd_usage)

    commands.add_parser("credits", help="the Kie.ai account's remaining credits").set_defaults(run=cmd_credits)

    purge_command = commands.add_parser("purge", help="delete finished tasks, their files and records")
    purge_command.add_argument("--older-than", required=True, help="age like 30d, 12h, 90m")
    purge_command.add_argument("--batch", type=int, default=500)
    purge_command.set_defaults(run=cmd_purge)
    add_generate_command(commands)
    return parser


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=int, help="max submissions per minute")
    parser.add_argument("--in-flight", type=int, help="max unfinished tasks")
    parser.add_argument("--daily-budget", type=float, help="max credits per UTC day")
    parser.add_argument("--monthly-budget", type=float, help="max credits per UTC month")


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs full request URLs at INFO; callback URLs carry per-task secrets.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def run_server(app: object, host: str, port: int, settings: Settings | None = None) -> None:
    """Serve `app` until SIGINT/SIGTERM; without settings, with the default connection bounds."""
    uvicorn.Server(build_config(app, host, port, settings or Settings())).run()


def cmd_serve(args: argparse.Namespace) -> None:
    from app.main import create_app

    emulator = start_emulator(args) if args.emulator else None
    # uvicorn re-raises SIGTERM once it has shut down; as an exit, it runs the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        settings = Settings.from_environ()
        if emulator is not None:
            asyncio.run(migrate_and_print_welcome(settings, args))
        run_server(create_app(settings, run_sweeper_in_process=not args.no_sweeper), args.host, args.port, settings)
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait(timeout=10)


def start_emulator(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """Development mode: a local Kie.ai (and kvid.ai) on its own port, with signed callbacks on."""
    api_key, hmac_key, kvid_key = (secrets.token_urlsafe(24) for _ in range(3))
    base_url = f"http://127.0.0.1:{args.emulator_port}"
    env = {**os.environ, "EMULATOR_API_KEY": api_key, "EMULATOR_HMAC_KEY": hmac_key, "EMULATOR_KVID_API_KEY": kvid_key}
    command = [sys.executable, "-m", "app", "emulator", "--port", str(args.emulator_port)]
    process = subprocess.Popen(command, env=env)
    os.environ.update(
        KIEAI_API_KEY=api_key,
        KIEAI_BASE_URL=base_url,
        KIEAI_UPLOAD_BASE_URL=base_url,
        KIEAI_WEBHOOK_HMAC_KEY=hmac_key,
        KVID_API_KEY=kvid_key,
        KVID_BASE_URL=base_url,
    )
    os.environ.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{args.port}")
    os.environ.setdefault("FETCH_ALLOWED_HOSTS", "127.0.0.1")  # copy the emulator's results too
    for _ in range(100):
        try:
            httpx.get(base_url + "/emulator/calls", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.terminate()
    sys.exit(f"imagehook: the emulator did not start on {base_url}")


async def migrate_and_print_welcome(settings: Settings, args: argparse.Namespace) -> None:
    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    async with open_deps(settings) as deps:
        key = (await create_key(deps, "dev")).key
    base = f"http://{args.host}:{args.port}"
    print(
        f"\nimagehook on {base}, using the Kie.ai emulator on {settings.kieai_base_url}\n"
        f"API key (shown once): {key}\n\n"
        f"  curl -s -X POST {base}/api/images/generate -H 'Authorization: Bearer {key}' \\\n"
        f"       -H 'Content-Type: application/json' -d '{{\"prompt\": \"a lighthouse at dawn\"}}'\n"
        f"  curl -s '{base}/api/images/status?taskId=<taskId>' -H 'Authorization: Bearer {key}'\n",
        flush=True,
    )


def cmd_migrate(args: argparse.Namespace) -> None:
    async def run() -> None:
        engine = create_engine(Settings.from_environ().database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())


def cmd_sweep(args: argparse.Namespace) -> None:
    settings = Settings.from_environ()

    async def run() -> None:
        async with open_deps(settings) as deps:
            if args.once:
                print(dict(await sweep_once(deps)))
            else:
                await run_sweeper(deps, settings.sweep_interval_s)

    asyncio.run(run())


def cmd_emulator(args: argparse.Namespace) -> None:
    from app.emulator import create_emulator

    app = create_emulator(api_key=args.api_key, hmac_key=args.hmac_key, kvid_api_key=args.kvid_api_key)
    run_server(app, args.host, args.port)


def cmd_keys_create(args: argparse.Namespace) -> None:
    async def run() -> NewKey:
        async with open_deps(Settings.from_environ()) as deps:
            created = await create_key(deps, args.name)
            await set_limits(deps, created.id, **limit_values(args))
            return created

    created = asyncio.run(run())
    if args.quiet:
        print(created.key)
    else:
        print(
            f"Created API key #{created.id} '{args.name}'. Both are shown only once.\n"
            f"API key:        {created.key}\n"
            f"Webhook secret: {created.webhook_secret}"
        )


def cmd_keys_rotate(args: argparse.Namespace) -> None:
    async def run() -> str:
        async with open_deps(Settings.from_environ()) as deps:
            return await rotate_webhook_secret(deps, args.key_id)

    try:
        secret = asyncio.run(run())
    except NotFound as exc:
        sys.exit(f"imagehook: {exc.message}")
    print(f"New webhook secret for key #{args.key_id} (the old one also signs for 24 h):\n{secret}")


def limit_values(args: argparse.Namespace) -> dict[str, float | None]:
    """Only the options given; 0 means "no limit"."""
    given = {
        "rate_per_minute": args.rate,
        "max_in_flight": args.in_flight,
        "daily_credit_budget": args.daily_budget,
        "monthly_credit_budget": args.monthly_budget,
    }
    return {name: (value or None) for name, value in given.items() if value is not None}


def run_with_deps(work: Callable[[Deps], Awaitable[T]]) -> T:
    async def run() -> T:
        async with open_deps(Settings.from_environ()) as deps:
            return await work(deps)

    return asyncio.run(run())


def cmd_keys_limits(args: argparse.Namespace) -> None:
    try:
        limits = run_with_deps(lambda deps: set_limits(deps, args.key_id, **limit_values(args)))
    except NotFound as exc:
        sys.exit(f"imagehook: {exc.message}")
    print(f"Key #{args.key_id} limits: " + ", ".join(f"{k}={v}" for k, v in limits.items()))


def cmd_usage(args: argparse.Namespace) -> None:
    params = {k: v for k, v in {"from": args.start, "to": args.end, "groupBy": args.group_by}.items() if v}
    report = run_with_deps(lambda deps: summarize(deps, params, args.key_id))
    print(f"{args.group_by:<40} {'tasks':>8} {'credits':>12} {'reserved':>10}")
    for group in report["groups"]:
        print(f"{group[args.group_by]:<40} {group['tasks']:>8} {group['credits']:>12.2f} {group['reserved']:>10.2f}")
    total = report["total"]
    print(f"{'total':<40} {total['tasks']:>8} {total['credits']:>12.2f} {total['reserved']:>10.2f}")


def cmd_credits(args: argparse.Namespace) -> None:
    async def fetch(deps: Deps) -> tuple[str, float]:
        provider = deps.providers.require(Balance)
        return provider.label, await provider.credits()

    try:
        label, credits = run_with_deps(fetch)
        print(f"{label} credits remaining: {credits:g}")
    except (NotConfigured, ProviderError) as exc:
        sys.exit(f"imagehook: {exc.message}")


def cmd_purge(args: argparse.Namespace) -> None:
    try:
        age = parse_age(args.older_than)
    except ValueError as exc:
        sys.exit(f"imagehook: {exc}")
    removed = run_with_deps(lambda deps: purge(deps, age, args.batch))
    print("Purged: " + (", ".join(f"{n} {what}" for what, n in sorted(removed.items()) if n) or "nothing"))
