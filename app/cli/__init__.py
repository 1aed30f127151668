"""The `imagehook` command: each command group (serve, keys, ops, generate) registers its own commands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version

from app.cli import keys, ops, serve
from app.cli.database import NoSchema, unreachable
from app.cli.parsing import CommandParser, describe
from app.client.generate import add_generate_command
from app.db.outage import GuardedPool
from app.errors import DatabaseUnavailable
from app.observe import logs
from app.settings import SettingsError

SUMMARY = "imagehook: a callback-driven gateway for asynchronous image generation."
COMMAND_GROUPS = (serve.register, keys.register, ops.register, add_generate_command)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        args.run(args)
    except SettingsError as exc:
        sys.exit(f"imagehook: configuration error: {exc}")
    except DatabaseUnavailable as exc:
        sys.exit(f"imagehook: {unreachable(exc)}")
    except NoSchema as exc:
        sys.exit(f"imagehook: {exc}")


def build_parser() -> CommandParser:
    parser = CommandParser(prog="imagehook", usage="%(prog)s [-h] [--version] COMMAND ...")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('imagehook')}")
    # The description lists the commands, subcommands included, so argparse's own list is left out.
    commands = parser.add_subparsers(metavar="COMMAND", help=argparse.SUPPRESS, prog=parser.prog)
    for register in COMMAND_GROUPS:
        register(commands)
    parser.description = describe(SUMMARY, parser)
    return parser


def configure_logging() -> None:
    try:
        logs.configure(*logs.chosen(os.environ))
    except ValueError as exc:
        sys.exit(f"imagehook: configuration error: {exc}")
    # httpx logs full request URLs at INFO; callback URLs carry per-task secrets.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # SQLAlchemy's own pools stay below INFO; the engine's pool, a subclass living outside the
    # "sqlalchemy" loggers, would say "Pool recreating" at every dispose.
    logging.getLogger(f"{GuardedPool.__module__}.{GuardedPool.__name__}").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").addFilter(without_context_announcements)


def without_context_announcements(record: logging.LogRecord) -> bool:
    """Alembic announces its DDL mode at every look at the schema, readiness probes included."""
    return not record.getMessage().startswith(("Context impl", "Will assume"))
