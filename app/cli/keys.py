"""`imagehook keys create | list | show | rename | expire | revoke | rotate-webhook-secret | limits`:
client API keys. A change reaches every replica within the key cache's TTL (app/reads/key_cache.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from app import key_admin
from app.cli.database import open_checked_deps, run_with_deps
from app.cli.parsing import CommandParser, Commands, add_command, duration
from app.deps import Deps
from app.errors import NotFound
from app.keys import NewKey, create_key, rotate_webhook_secret, set_limits
from app.reads.key_cache import KEY_CACHE_TTL_S
from app.settings import Settings

T = TypeVar("T")


def register(commands: Commands) -> None:
    keys: CommandParser = commands.add_parser("keys", help="manage client API keys")
    key_commands = keys.add_subparsers(metavar="ACTION")
    create = add_command(key_commands, "create", "create a key and print it (once)", cmd_keys_create)
    create.add_argument("name")
    create.add_argument("--quiet", action="store_true", help="print only the key")
    create.add_argument("--expires-in", type=duration, help="refuse the key after this long, e.g. 30d (default: never)")
    about_list = "every key: id, name, created, last used, limits, status"
    listing = add_command(key_commands, "list", about_list, cmd_keys_list)
    listing.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    show = add_command(key_commands, "show", "a key's limits, usage this day and month, tasks in flight", cmd_keys_show)
    show.add_argument("key_id", type=int)
    rename = add_command(key_commands, "rename", "give a key a new name", cmd_keys_rename)
    rename.add_argument("key_id", type=int)
    rename.add_argument("name")
    about_expire = "refuse a key after a while (`never` removes the expiry)"
    expire = add_command(key_commands, "expire", about_expire, cmd_keys_expire)
    expire.add_argument("key_id", type=int)
    expire.add_argument("expires_in", type=lambda text: None if text == "never" else duration(text), metavar="DURATION")
    revoke = add_command(key_commands, "revoke", "refuse a key for good; its tasks run on", cmd_keys_revoke)
    revoke.add_argument("key_id", type=int)
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
            if args.expires_in is not None:
                await key_admin.set_expiry(deps, created.id, args.expires_in)
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
    secret = run_on_key(lambda deps: rotate_webhook_secret(deps, args.key_id))
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
    limits = run_on_key(lambda deps: set_limits(deps, args.key_id, **limit_values(args)))
    print(f"Key #{args.key_id} limits: " + ", ".join(f"{k}={v}" for k, v in limits.items()))


def run_on_key(work: Callable[[Deps], Awaitable[T]]) -> T:
    """run_with_deps, with an unknown key id said plainly."""
    try:
        return run_with_deps(work)
    except NotFound as exc:
        sys.exit(f"imagehook: {exc.message}")


def cmd_keys_list(args: argparse.Namespace) -> None:
    keys, now = run_with_deps(key_admin.list_keys), datetime.now(UTC)
    if args.json:
        print(json.dumps([key.as_json(now) for key in keys], indent=2))
        return
    columns = ("ID", "NAME", "PREFIX", "CREATED", "LAST USED", "EXPIRES", "STATUS", "LIMITS")
    rows = [
        (
            str(key.id),
            key.name,
            key.prefix + "...",
            moment(key.created_at),
            moment(key.last_used_at),
            moment(key.expires_at),
            key.status(now),
            ", ".join(f"{name}={value:g}" for name, value in key.limits.items() if value is not None) or "none",
        )
        for key in keys
    ]
    widths = [max(len(row[n]) for row in [columns, *rows]) for n in range(len(columns))]
    for row in [columns, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def moment(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def cmd_keys_show(args: argparse.Namespace) -> None:
    print(json.dumps(run_on_key(lambda deps: key_admin.key_details(deps, args.key_id)), indent=2))


def cmd_keys_rename(args: argparse.Namespace) -> None:
    key = run_on_key(lambda deps: key_admin.rename_key(deps, args.key_id, args.name))
    print(f"Key #{key.id} is now named '{key.name}'.")


def cmd_keys_expire(args: argparse.Namespace) -> None:
    key = run_on_key(lambda deps: key_admin.set_expiry(deps, args.key_id, args.expires_in))
    when = "never expires" if key.expires_at is None else f"expires {moment(key.expires_at)}"
    print(f"Key #{key.id} {when}; every replica knows within {KEY_CACHE_TTL_S:g} s.")


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    key = run_on_key(lambda deps: key_admin.revoke_key(deps, args.key_id))
    print(
        f"Key #{key.id} '{key.name}' revoked at {moment(key.revoked_at)}; every replica refuses it "
        f"within {KEY_CACHE_TTL_S:g} s. Its tasks run on and their webhooks are still sent."
    )
