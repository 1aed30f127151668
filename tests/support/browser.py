"""A real headless browser: Debian's Chromium (installed by `make browser`, part of `make test`), driven by Playwright's
Python client. Playwright's own browser downloads are never used: the page is tested in the
browser the machine has, offline."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str:
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    pytest.fail("Chromium is not installed: `make browser` installs Debian's chromium package")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # As root (CI) Chromium's sandbox cannot start; the pages it loads are our own.
        launched = await playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield launched
        await launched.close()
