"""What every command group builds on: help that shows each option's default, and a listing of all commands."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

Run = Callable[[argparse.Namespace], None]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; an option's help ends with its default
    unless it names one itself or the option is required."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.required or action.default is argparse.SUPPRESS or "default" in text:
            return text
        return f"{text} (default: {'off' if action.default is False else '%(default)s'})"


class Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands whose one-line help is also their description, for `imagehook --help` to list."""

    def add_parser(self, name: str, **kwargs: Any) -> CommandParser:
        kwargs.setdefault("description", kwargs.get("help"))
        return super().add_parser(name, **kwargs)


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that knows its subcommands (required, one of them) and can list them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.commands: Commands | None = None

    def add_subparsers(self, **kwargs: Any) -> Commands:
        self.commands = super().add_subparsers(action=Commands, required=True, **kwargs)
        return self.commands

    def listing(self) -> list[tuple[str, str]]:
        """(command, what it does) for every command, subcommands spelled out (`keys create`)."""
        lines: list[tuple[str, str]] = []
        for name, parser in (self.commands.choices if self.commands else {}).items():
            if parser.commands is None:
                lines.append((name, parser.description or ""))
            else:
                lines += [(f"{name} {sub}", about) for sub, about in parser.listing()]
        return lines


def add_command(commands: Commands, name: str, about: str, run: Run, **kwargs: Any) -> CommandParser:
    parser = commands.add_parser(name, help=about, **kwargs)
    parser.set_defaults(run=run)
    return parser


def describe(summary: str, parser: CommandParser) -> str:
    """summary, then one line per command of parser."""
    lines = parser.listing()
    width = max(len(command) for command, _ in lines)
    return summary + "\n\ncommands:\n" + "\n".join(f"  {command:<{width}}  {about}" for command, about in lines)


DURATION = re.compile(r"([0-9]{1,5})([smhdw])")
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `45s` or `2w`, as an argparse type."""
    found = DURATION.fullmatch(text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30d, 12h, 90m, 45s or 2w")
    return timedelta(**{DURATION_UNITS[found.group(2)]: int(found.group(1))})
