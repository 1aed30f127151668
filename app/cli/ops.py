"""`imagehook usage | credits | purge`: what was spent, what is left, and retention."""

from __future__ import annotations

import argparse
import sys

from app.cli.database import run_with_deps
from app.cli.parsing import Commands, add_command, duration
from app.deps import Deps
from app.errors import NotConfigured, ProviderError
from app.outbox.storage import StorageError
from app.providers.base import Balance
from app.reads.usage import summarize
from app.tasks.retention import purge


def register(commands: Commands) -> None:
    usage = add_command(commands, "usage", "tasks and credits per key, model or day", cmd_usage)
    usage.add_argument("--key-id", type=int, help="one key (default: all)")
    usage.add_argument("--from", dest="start", help="ISO 8601 start (default: 30 days ago)")
    usage.add_argument("--to", dest="end", help="ISO 8601 end (default: now)")
    usage.add_argument("--group-by", choices=["key", "model", "day"], default="key", help="what a row totals")

    add_command(commands, "credits", "the Kie.ai account's remaining credits", cmd_credits)

    purge_command = add_command(commands, "purge", "delete finished tasks, their files and records", cmd_purge)
    purge_command.add_argument(
        "--older-than", required=True, type=duration, help="age like 30d, 12h, 90m or 2w (required)"
    )
    purge_command.add_argument(
        "--batch", type=int, default=500, help="rows deleted per batch, with a pause between batches"
    )


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
        removed = run_with_deps(lambda deps: purge(deps, args.older_than, args.batch))
    except StorageError as exc:  # files go first, so nothing was purged past the one that failed
        sys.exit(f"imagehook: purge stopped: {exc}")
    print("Purged: " + (", ".join(f"{n} {what}" for what, n in sorted(removed.items()) if n) or "nothing"))
