"""The package as users get it: the wheel, installed into a fresh virtualenv, run from an empty directory.

The virtualenv reaches the dependencies through a .pth file naming this interpreter's
site-packages, so nothing is downloaded for it; imagehook itself comes only from the wheel.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
# What the build reads; copied, so that building leaves nothing behind in the checkout.
BUILD_INPUTS = ("app", "migrations", "pyproject.toml", "README.md")
SERVE_READY_S = 30


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source") / "imagehook"
    for name in BUILD_INPUTS:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name)
    dist = source.parent / "dist"
    pip(["wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(source)])
    (built,) = dist.glob("imagehook-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site_packages = Path(venv_path(root, "purelib"))
    (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip(["--python", str(root / "bin" / "python"), "install", "--quiet", "--no-deps", str(wheel)])
    return root


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory: no checkout to import from, no alembic.ini to find."""
    return tmp_path


def pip(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def venv_path(root: Path, name: str) -> str:
    return sysconfig.get_path(name, vars={"base": str(root), "platbase": str(root)})


def run(venv: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(venv / "bin" / "imagehook"), *args]
    done = subprocess.run(command, cwd=workdir, env=environment(workdir), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}{done.stderr}"
    return done


def environment(workdir: Path) -> dict[str, str]:
    """Only what a user would set: no PYTHONPATH leading back to the checkout."""
    return {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'imagehook.db'}"}


def test_the_wheel_carries_every_module_page_and_migration(wheel: Path) -> None:
    sources = {path.relative_to(ROOT).as_posix() for path in (ROOT / "app").rglob("*.py")}
    sources |= {path.relative_to(ROOT).as_posix() for path in (ROOT / "app" / "dashboard" / "static").iterdir()}
    migrations = {"app/_" + p.relative_to(ROOT).as_posix() for p in (ROOT / "migrations").rglob("*") if p.is_file()}
    migrations = {name for name in migrations if "__pycache__" not in name}
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("app/")}
    assert sources | migrations == shipped


def test_the_installed_package_migrates_makes_keys_and_serves(venv: Path, workdir: Path) -> None:
    assert run(venv, workdir, "--version").stdout.strip() == "imagehook 0.1.0"
    run(venv, workdir, "migrate")
    assert run(venv, workdir, "keys", "create", "first", "--quiet").stdout.startswith("ih_")
    with serving(venv, workdir) as url:
        response = ready(url)
        page, script = httpx.get(url + "/dashboard"), httpx.get(url + "/dashboard/static/dashboard.js")
    assert response is not None and response.status_code == 200, (workdir / "serve.log").read_text()
    assert response.json()["status"] == "ready"
    # The dashboard's files come from the installed package.
    assert page.status_code == 401 and 'name="key"' in page.text
    assert script.status_code == 200 and "EventSource" in script.text


def test_the_installed_package_runs_from_site_packages(venv: Path, workdir: Path) -> None:
    show = (
        "import app, app.db.migrate as migrate\n"
        "print(app.__file__)\n"
        "print(migrate.alembic_config('').get_main_option('script_location'))\n"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", show],
        cwd=workdir,
        env=environment(workdir),
        capture_output=True,
        text=True,
        check=True,
    )
    module, migrations = (Path(line) for line in done.stdout.splitlines())
    site_packages = Path(venv_path(venv, "purelib"))
    assert module == site_packages / "app" / "__init__.py"
    assert migrations == site_packages / "app" / "_migrations"
    assert (migrations / "env.py").is_file() and not module.is_relative_to(ROOT)


@contextlib.contextmanager
def serving(venv: Path, workdir: Path) -> Iterator[str]:
    """`imagehook serve` with the bundled emulator as its Kie.ai, until the block ends."""
    port, emulator_port = free_port(), free_port()
    command = [str(venv / "bin" / "imagehook"), "serve", "--port", str(port), "--emulator"]
    command += ["--emulator-port", str(emulator_port)]
    log = (workdir / "serve.log").open("w")
    env = environment(workdir) | {"IMAGEHOOK_ADMIN_KEY": "installed-admin-key-0123456789"}
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def ready(url: str) -> httpx.Response | None:
    """/readyz once it answers 200; else what it last answered, None if it never did."""
    deadline = time.monotonic() + SERVE_READY_S
    response = None
    while time.monotonic() < deadline and (response is None or response.status_code != 200):
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(url + "/readyz", timeout=2)
        time.sleep(0.1)
    return response
