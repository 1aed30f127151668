"""Settings read from the environment: every variable in one table, yes/no variables strict."""

from __future__ import annotations

from dataclasses import fields

import pytest

from app.outbox.storage import local_directory
from app.settings import VARIABLES, Settings, SettingsError

SECRET = {"IMAGEHOOK_SECRET": "s" * 16}
FLAGS = {
    "CALLBACK_CONFIRM": "callback_confirm",
    "WEBHOOK_ALLOW_PRIVATE": "webhook_allow_private",
    "STORAGE_REDIRECT": "storage_redirect",
    "ACCESS_LOG": "access_log",
}
YES = ["1", "true", "TRUE", "True", "yes", "YES", "on", "On"]
NO = ["0", "false", "FALSE", "no", "No", "off", "OFF"]


def test_every_setting_but_the_body_cap_has_a_variable() -> None:
    # max_body_bytes is fixed: the request guard and the hostile-input tests rely on it.
    assert {variable.setting for variable in VARIABLES} == {f.name for f in fields(Settings)} - {"max_body_bytes"}
    assert len({variable.name for variable in VARIABLES}) == len(VARIABLES)


def test_the_flags_are_the_only_yes_no_settings() -> None:
    booleans = {f.name for f in fields(Settings) if f.type == "bool"}
    assert booleans == set(FLAGS.values())


@pytest.mark.parametrize("variable", FLAGS)
@pytest.mark.parametrize("spelling", YES)
def test_a_flag_is_on_in_every_spelling_of_yes(variable: str, spelling: str) -> None:
    assert getattr(Settings.from_environ(SECRET | {variable: spelling}), FLAGS[variable]) is True


@pytest.mark.parametrize("variable", FLAGS)
@pytest.mark.parametrize("spelling", [*NO, ""])
def test_a_flag_is_off_in_every_spelling_of_no_and_when_empty(variable: str, spelling: str) -> None:
    assert getattr(Settings.from_environ(SECRET | {variable: spelling}), FLAGS[variable]) is False


@pytest.mark.parametrize("variable", FLAGS)
def test_a_flag_is_off_when_unset(variable: str) -> None:
    assert getattr(Settings.from_environ(SECRET), FLAGS[variable]) is False


@pytest.mark.parametrize("variable", FLAGS)
@pytest.mark.parametrize("spelling", ["2", "enabled", "y", "nope"])
def test_any_other_spelling_is_refused_by_name(variable: str, spelling: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable} must be one of .*got '{spelling}'$"):
        Settings.from_environ(SECRET | {variable: spelling})


def test_defaults_shown_in_help_are_the_settings_defaults() -> None:
    shown = {variable.name: variable.default_text() for variable in VARIABLES}
    assert shown["SWEEP_INTERVAL_S"] == "5" and shown["CALLBACK_CONFIRM"] == "0"
    assert shown["KIEAI_API_KEY"] == "unset" and shown["FETCH_ALLOWED_HOSTS"].startswith("tempfile.aiquickdraw.com,")
    assert shown["IMAGEHOOK_SECRET"] == "generated into var/imagehook.secret"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("file:///var/lib/imagehook/files", "file:///var/lib/imagehook/files"),
        ("s3://results", "s3://results"),
        ("s3://my.results-bucket/imagehook/copies/", "s3://my.results-bucket/imagehook/copies"),
        ("  ", ""),
    ],
)
def test_storage_url_takes_a_directory_or_a_bucket(given: str, kept: str) -> None:
    assert Settings.from_environ(SECRET | {"STORAGE_URL": given}).storage_url == kept


@pytest.mark.parametrize(
    "given", ["/var/files", "s3://", "s3://A_Bucket/x", "s3://ab", "gs://bucket", "file://host/x", "s3://b-ok/x?y=1"]
)
def test_storage_url_names_what_it_takes_when_refused(given: str) -> None:
    with pytest.raises(SettingsError, match="STORAGE_URL must be file:///path or s3://bucket/prefix"):
        Settings.from_environ(SECRET | {"STORAGE_URL": given})


def test_a_file_url_or_else_storage_dir_names_the_directory() -> None:
    assert local_directory(Settings(storage_url="file:///srv/copies%20here")) == "/srv/copies here"
    assert local_directory(Settings(storage_dir="var/elsewhere")) == "var/elsewhere"
