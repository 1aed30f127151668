"""The deployable image and the compose file (deploy/): they cannot be built here (no registry for
base images), so what can be checked without building them is: the compose file runs two replicas
after a one-off migration, on shared PostgreSQL and MinIO, with exactly the environment the README
documents; the image runs the installed package as a non-root user with a health check."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from app.cli import build_parser
from app.settings import VARIABLES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
README = (ROOT / "README.md").read_text()


def readme_section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_two_replicas_start_after_one_migration_on_shared_stores() -> None:
    services = COMPOSE["services"]
    replicas = [name for name, service in services.items() if service.get("command") is None and "build" in service]
    assert replicas == ["gateway-1", "gateway-2"]
    assert services["migrate"]["command"] == ["migrate"] and services["migrate"]["restart"] == "no"
    for name in replicas:
        after = services[name]["depends_on"]
        assert after["migrate"] == {"condition": "service_completed_successfully"}
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+asyncpg://") and "@postgres:" in env["DATABASE_URL"]
        assert env["STORAGE_URL"].startswith("s3://") and env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert services["gateway-1"]["environment"] == services["gateway-2"]["environment"]
    assert {"postgres", "minio"} <= set(services)


def test_the_compose_environment_is_exactly_what_the_readme_documents() -> None:
    env = COMPOSE["services"]["gateway-1"]["environment"]
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", readme_section("Configuration"), re.M))
    assert set(env) <= documented, set(env) - documented
    assert {variable.name for variable in VARIABLES} <= documented
    stop_grace = int(COMPOSE["services"]["gateway-1"]["stop_grace_period"].rstrip("s"))
    assert stop_grace > float(env["SHUTDOWN_DELAY_S"]) + float(env["SHUTDOWN_GRACE_S"])


def test_the_image_runs_the_installed_package_as_a_user_with_a_health_check() -> None:
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert len(stages) == 2 and all(stage.startswith("python:3.11-slim") for stage in stages)
    final = DOCKERFILE.split("\nFROM ", 2)[2]
    assert "COPY app" not in final and "pip install --no-cache-dir --no-index /wheels/" in final
    assert re.search(r"^USER imagehook$", final, re.M)
    assert "/healthz" in re.search(r"^HEALTHCHECK .*?\n.*$", final, re.M).group(0)
    entrypoint = re.search(r'^ENTRYPOINT \["imagehook"\]$', final, re.M)
    command = re.search(r"^CMD (\[.*\])$", final, re.M)
    assert entrypoint and command
    args = build_parser().parse_args(yaml.safe_load(command.group(1)))
    assert (args.host, args.port) == ("0.0.0.0", 8000)
