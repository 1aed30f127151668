"""The processes under test, each a real uvicorn server in its own process on 127.0.0.1."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.emulator.wiring import gateway_environment

ROOT = Path(__file__).resolve().parent.parent
KIE_API_KEY = "bench-kie-key"
HMAC_KEY = "bench-webhook-hmac-key"
SECRET = "bench-secret-0123456789abcdef"
STALE_AFTER_S = 5  # small, so a dropped callback is recovered within seconds in the end-to-end run
SWEEP_INTERVAL_S = 1


# Ports handed out lie below the kernel's ephemeral range (32768 and up on Linux), from which
# outgoing connections take theirs: a port found free by binding port 0 could be taken by any
# client socket before the server bound it. Each process (each test worker) walks its own slice,
# so two never hand out the same port, and none hands out one twice.
PORT_RANGE = range(20000, 32768)
SLICES = 8


def _port_cursor() -> itertools.cycle[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) % SLICES if worker.isdigit() else 0
    size = len(PORT_RANGE) // SLICES
    start = PORT_RANGE.start + index * size
    return itertools.cycle(range(start, start + size))


_ports = _port_cursor()


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on now (the tests' servers take theirs from here too)."""
    for port in _ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("unreachable: the cycle never ends")


class Server:
    def __init__(self, name: str, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", *args, "--port", str(self.port)]
        self.env = {**os.environ, **(env or {})}
        self.log = workdir / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_path: str, timeout_s: float = 30) -> Server:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self.command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(self.url + ready_path, timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start; its log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def peak_rss_mb(self) -> float | None:
        """The process's high-water resident set size (VmHWM): its peak since it started."""
        if self.process is None:
            return None
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        kilobytes = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
        return None if kilobytes is None else kilobytes / 1024

    def cpu_s(self) -> float:
        """CPU time the process has used so far, user and system, over all its threads."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_emulator(workdir: Path) -> Server:
    args = ["app", "emulator", "--api-key", KIE_API_KEY, "--hmac-key", HMAC_KEY]
    return Server("emulator", args, workdir).start("/emulator/calls")


def start_bare(workdir: Path) -> Server:
    return Server("bare", ["bench.bare"], workdir).start("/status")


def gateway_env(database_url: str, emulator_url: str, workdir: Path) -> dict[str, str]:
    """As tests/support/gateways.py's gateway_env, tuned for a long run against the emulator."""
    return gateway_environment(emulator_url, api_key=KIE_API_KEY, hmac_key=HMAC_KEY) | {
        "DATABASE_URL": database_url,
        "IMAGEHOOK_SECRET": SECRET,
        "SWEEP_INTERVAL_S": str(SWEEP_INTERVAL_S),
        "STALE_AFTER_S": str(STALE_AFTER_S),
        # Seeded in-flight tasks are up to minutes old and must never time out during the run.
        "TASK_TIMEOUT_S": str(7 * 86400),
        # Kie's 20-per-10-s create limit would stretch the end-to-end run to many minutes; the
        # emulator enforces none, so the gateway's throttle is off.
        "KIE_CREATE_LIMIT": "0",
        # The emulator serves results on 127.0.0.1: the gateway copies them as it would Kie's.
        "FETCH_ALLOWED_HOSTS": "127.0.0.1",
        "STORAGE_DIR": str(workdir / "files"),
    }


def start_gateway(workdir: Path, env: dict[str, str]) -> Server:
    server = Server("gateway", ["app", "serve"], workdir, env)
    server.env["PUBLIC_BASE_URL"] = server.url  # callbacks come back to this very gateway
    return server.start("/readyz")


def migrate(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "IMAGEHOOK_SECRET": SECRET}
    done = subprocess.run([sys.executable, "-m", "app", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"imagehook migrate failed:\n{done.stdout}{done.stderr}")
