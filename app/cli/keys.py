"""`imagehook keys create | rotate-webhook-secret | limits`: client API keys."""

from __future__ import annotations

import argparse
import asyncio
import sys

from app.cli.database import open_checked_deps, run_with_deps
from app.cli.parsing import CommandParser, Commands, add_command
from app.errors import NotFound
from app.keys import NewKey, create_key, rotate_webhook_secret, set_limits
from app.settings import Settings


def register(commands: Commands) -> None:
    keys: CommandParser = commands.add_parser("keys", help="manage client API keys")
    key_commands = keys.add_subparsers(metavar="ACTION")
    create = add_command(key_commands, "create", "create a key and print it (once)", cmd_keys_create)
    create.add_argument("name")
    create.add_argument("--quiet", action="store_true", help="print only the key")
    rotate = add_command(
        key_commands,
        "rotate-webhook-secret",
        "new webhook signing secret (old one signs 24 h more)",
        cmd_keys_rotate,
    )
    rotate.add_argument("key_id", type=int)
    add_limit_options(create)
    limits = add_command(key_commands, "limits", "set a key's limits (0 removes one)", cmd_keys_limits)
    limits.add_argument("key_id", type=int)
    add_limit_options(limits)


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=int, help="max submissions per minute (default: unchanged; none for a new key)")
    parser.add_argument("--in-flight", type=int, help="max unfinished tasks (default: unchanged; none for a new key)")
    parser.add_argument(
        "--daily-budget", type=float, help="max credits per UTC day (default: unchanged; none for a new key)"
    )
    parser.add_argument(
        "--monthly-budget", type=float, help="max credits per UTC month (default: unchanged; none for a new key)"
    )


def cmd_keys_create(args: argparse.Namespace) -> None:
    async def run() -> NewKey:
        async with open_checked_deps(Settings.from_environ()) as deps:
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
    try:
        secret = run_with_deps(lambda deps: rotate_webhook_secret(deps, args.key_id))
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


def cmd_keys_limits(args: argparse.Namespace) -> None:
    try:
        limits = run_with_deps(lambda deps: set_limits(deps, args.key_id, **limit_values(args)))
    except NotFound as exc:
        sys.exit(f"imagehook: {exc.message}")
    print(f"Key #{args.key_id} limits: " + ", ".join(f"{k}={v}" for k, v in limits.items()))
