"""The `imagehook` command line: its help, its version, and one-line refusals of bad settings and databases."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli import build_parser, main
from app.cli.parsing import CommandParser
from app.emulator.wiring import gateway_environment
from app.settings import VARIABLES

ROOT = Path(__file__).resolve().parents[2]
SECRET = "cli-test-secret-0123456789"
UNREACHABLE_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:1/imagehook"
COMMANDS = [
    "serve",
    "migrate",
    "sweep",
    "emulator",
    "keys create",
    "keys list",
    "keys show",
    "keys rename",
    "keys expire",
    "keys revoke",
    "keys rotate-webhook-secret",
    "keys limits",
    "usage",
    "credits",
    "purge",
    "generate",
]
# Every command that reads or writes the database, as a user would type it (serve runs in a subprocess).
DATABASE_COMMANDS = [
    ["sweep", "--once"],
    ["keys", "create", "someone"],
    ["keys", "rotate-webhook-secret", "1"],
    ["keys", "limits", "1", "--rate", "5"],
    ["keys", "list"],
    ["keys", "show", "1"],
    ["keys", "rename", "1", "new name"],
    ["keys", "expire", "1", "30d"],
    ["keys", "revoke", "1"],
    ["usage"],
    ["credits"],
    ["purge", "--older-than", "30d"],
]
NO_SCHEMA = "imagehook: the database has no schema yet: run `imagehook migrate` first"
UNREACHABLE = "imagehook: database unreachable: ConnectionRefusedError: "


def parsers(parser: CommandParser) -> Iterator[CommandParser]:
    """parser and every parser of its subcommands, however deep."""
    yield parser
    for sub in (parser.commands.choices if parser.commands else {}).values():
        yield from parsers(sub)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "app", *args]
    environment = {**os.environ, "IMAGEHOOK_SECRET": SECRET, **env}
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)


@pytest.fixture
def unmigrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("IMAGEHOOK_SECRET", SECRET)
    return url


def exit_message(argv: list[str]) -> object:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return exited.value.code


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert exit_message(["--version"]) == 0
    assert capsys.readouterr().out == f"imagehook {version('imagehook')}\n"


def test_top_level_help_lists_every_command() -> None:
    listed = [line.split("  ")[1].strip() for line in build_parser().format_help().splitlines() if line[:2] == "  "]
    assert [name for name in listed if not name.startswith("-")] == COMMANDS


def test_every_option_shows_its_default_or_that_it_is_required() -> None:
    for parser in parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.option_strings and action.default is not argparse.SUPPRESS:
                text = formatter._get_help_string(action)
                assert "default" in text or action.required, f"{parser.prog} {action.option_strings}"
        assert "default: None" not in parser.format_help(), parser.prog


def test_serve_help_lists_every_environment_variable() -> None:
    serve = build_parser().commands.choices["serve"]
    help_text = serve.format_help()
    for variable in VARIABLES:
        assert f"  {variable.name} " in help_text
        assert f"(default: {variable.default_text()})" in " ".join(help_text.split())


@pytest.mark.usefixtures("unmigrated")
@pytest.mark.parametrize("argv", DATABASE_COMMANDS, ids=" ".join)
def test_an_unmigrated_database_is_refused_in_one_line(argv: list[str]) -> None:
    assert exit_message(argv) == NO_SCHEMA


@pytest.mark.parametrize("argv", [["migrate"], *DATABASE_COMMANDS], ids=" ".join)
def test_an_unreachable_postgres_is_refused_in_one_line(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE_POSTGRES)
    monkeypatch.setenv("IMAGEHOOK_SECRET", SECRET)
    message = exit_message(argv)
    assert isinstance(message, str) and message.startswith(UNREACHABLE) and "\n" not in message


def test_serve_refuses_an_unmigrated_database_with_exit_code_1(unmigrated: str) -> None:
    done = run_cli("serve", "--port", "1", DATABASE_URL=unmigrated)
    assert (done.returncode, done.stderr) == (1, NO_SCHEMA + "\n")


def test_serve_refuses_an_unreachable_postgres_with_exit_code_1() -> None:
    done = run_cli("serve", "--port", "1", DATABASE_URL=UNREACHABLE_POSTGRES)
    assert done.returncode == 1 and done.stderr.startswith(UNREACHABLE) and done.stderr.count("\n") == 1


def test_a_misspelt_flag_is_a_configuration_error_with_exit_code_1(unmigrated: str) -> None:
    done = run_cli("migrate", DATABASE_URL=unmigrated, CALLBACK_CONFIRM="enabled")
    refusal = "CALLBACK_CONFIRM must be one of 1, 0, true, false, yes, no, on, off, got 'enabled'"
    assert (done.returncode, done.stderr) == (1, f"imagehook: configuration error: {refusal}\n")


def test_gateway_environment_points_kie_and_kvid_at_the_emulator() -> None:
    url = "http://127.0.0.1:9"
    kie_only = gateway_environment(url, api_key="k", hmac_key="h")
    assert kie_only == {
        "KIEAI_API_KEY": "k",
        "KIEAI_BASE_URL": url,
        "KIEAI_UPLOAD_BASE_URL": url,
        "KIEAI_WEBHOOK_HMAC_KEY": "h",
    }
    with_kvid = gateway_environment(url, api_key="k", hmac_key="h", kvid_key="v")
    assert with_kvid == kie_only | {"KVID_API_KEY": "v", "KVID_BASE_URL": url}
