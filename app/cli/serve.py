"""`imagehook serve | migrate | sweep | emulator`: running the gateway, its schema, its sweeper, the emulator."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time

import httpx

from app.cli.database import migrate, open_checked_deps, require_schema
from app.cli.parsing import Commands, add_command
from app.db.engine import create_engine
from app.deps import open_deps
from app.emulator.wiring import gateway_environment
from app.keys import create_key
from app.server import GracefulServer, build_config
from app.settings import VARIABLES, Settings
from app.tasks.sweeper import run_sweeper, sweep_once

HELP_WIDTH = 100


def register(commands: Commands) -> None:
    serve = add_command(commands, "serve", "run the gateway (and its sweeper)", cmd_serve, epilog=environment_help())
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--no-sweeper", action="store_true", help="leave sweeping to `imagehook sweep`")
    serve.add_argument(
        "--emulator", action="store_true", help="start the bundled Kie.ai emulator and use it (development)"
    )
    serve.add_argument("--emulator-port", type=int, default=8765, help="port of the emulator --emulator starts")

    add_command(commands, "migrate", "bring the database schema up to date", cmd_migrate)

    sweep = add_command(commands, "sweep", "run the sweeper alone", cmd_sweep)
    sweep.add_argument("--once", action="store_true", help="one round, then exit")

    emulator = add_command(commands, "emulator", "run the local Kie.ai emulator", cmd_emulator)
    emulator.add_argument("--host", default="127.0.0.1", help="address to listen on")
    emulator.add_argument("--port", type=int, default=8765, help="port to listen on")
    add_emulator_key_options(emulator)


def add_emulator_key_options(emulator: argparse.ArgumentParser) -> None:
    # The defaults come from the environment, and help names the variables instead of showing their values.
    emulator.add_argument(
        "--api-key",
        default=os.environ.get("EMULATOR_API_KEY", "emulator-key"),
        help="the Kie.ai API key it accepts (default: $EMULATOR_API_KEY, else emulator-key)",
    )
    emulator.add_argument(
        "--hmac-key",
        default=os.environ.get("EMULATOR_HMAC_KEY"),
        help="the key it signs callbacks with (default: $EMULATOR_HMAC_KEY, else callbacks are unsigned)",
    )
    emulator.add_argument(
        "--kvid-api-key",
        default=os.environ.get("EMULATOR_KVID_API_KEY", "kvid-emulator-key"),
        help="the kvid.ai API key it accepts (default: $EMULATOR_KVID_API_KEY, else kvid-emulator-key)",
    )


def environment_help() -> str:
    """The variables app/settings.py reads, with their defaults."""
    width = max(len(variable.name) for variable in VARIABLES) + 4
    lines = [
        textwrap.fill(
            f"{v.meaning} (default: {v.default_text()})",
            HELP_WIDTH,
            initial_indent=f"  {v.name}".ljust(width),
            subsequent_indent=" " * width,
            break_on_hyphens=False,
            break_long_words=False,
        )
        for v in VARIABLES
    ]
    return "environment variables, read at start-up:\n" + "\n".join(lines)


def run_server(app: object, host: str, port: int, settings: Settings | None = None) -> None:
    """Serve `app` until SIGINT/SIGTERM; without settings, with the default connection bounds."""
    settings = settings or Settings()
    GracefulServer(build_config(app, host, port, settings), app, settings.shutdown_delay_s).run()


def cmd_serve(args: argparse.Namespace) -> None:
    from app.main import create_app

    emulator = start_emulator(args) if args.emulator else None
    # uvicorn re-raises SIGTERM once it has shut down; as an exit, it runs the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        settings = Settings.from_environ()
        if emulator is not None:
            asyncio.run(migrate_and_print_welcome(settings, args))
        asyncio.run(check_schema(settings))
        run_server(create_app(settings, run_sweeper_in_process=not args.no_sweeper), args.host, args.port, settings)
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait(timeout=10)


async def check_schema(settings: Settings) -> None:
    """Refuse to serve a database that does not answer or was never migrated (one behind is served: not ready)."""
    engine = create_engine(settings.database_url, settings.database_timeout_s)
    try:
        await require_schema(engine)
    finally:
        await engine.dispose()


def start_emulator(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """Development mode: a local Kie.ai (and kvid.ai) on its own port, with signed callbacks on."""
    api_key, hmac_key, kvid_key = (secrets.token_urlsafe(24) for _ in range(3))
    base_url = f"http://127.0.0.1:{args.emulator_port}"
    env = {**os.environ, "EMULATOR_API_KEY": api_key, "EMULATOR_HMAC_KEY": hmac_key, "EMULATOR_KVID_API_KEY": kvid_key}
    command = [sys.executable, "-m", "app", "emulator", "--port", str(args.emulator_port)]
    process = subprocess.Popen(command, env=env)
    os.environ.update(gateway_environment(base_url, api_key=api_key, hmac_key=hmac_key, kvid_key=kvid_key))
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
    await migrate(settings.database_url)
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
    asyncio.run(migrate(Settings.from_environ().database_url))


def cmd_sweep(args: argparse.Namespace) -> None:
    settings = Settings.from_environ()

    async def run() -> None:
        async with open_checked_deps(settings) as deps:
            if args.once:
                print(dict(await sweep_once(deps)))
            else:
                await run_sweeper(deps, settings.sweep_interval_s)

    asyncio.run(run())


def cmd_emulator(args: argparse.Namespace) -> None:
    from app.emulator import create_emulator

    app = create_emulator(api_key=args.api_key, hmac_key=args.hmac_key, kvid_api_key=args.kvid_api_key)
    run_server(app, args.host, args.port)
