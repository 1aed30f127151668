"""Load generation with wrk: request files, running it, reading its report."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).parent / "lua"
THREADS = 2
CONNECTIONS = 32
SHARE_DONE = b"share answered"  # what once.lua prints as each thread is done
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # to milliseconds


@dataclass(frozen=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


def ensure_installed() -> None:
    """wrk is a Debian package; the bench runs as root on the development and CI machines."""
    if shutil.which("wrk"):
        return
    print("wrk is missing: installing it with apt-get", flush=True)
    subprocess.run("apt-get update -q && apt-get install -y -q wrk", shell=True, check=True)


def request_line(method: str, path: str, body: str = "", headers: dict[str, str] | None = None) -> str:
    """One line of a request file for lua/requests.lua."""
    fields = [method, path, body, *(f"{name}: {value}" for name, value in (headers or {}).items())]
    assert not any("\t" in field or "\n" in field for field in fields), "tabs and newlines separate requests"
    return "\t".join(fields)


def write_requests(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


async def run(
    url: str, requests: Path, *, mode: str, duration_s: float, headers: dict[str, str] | None = None
) -> Result:
    """Load `url` with the requests in the file for duration_s; mode is "random" or "sequential"
    (see lua/requests.lua), or "once": every request answered once, then stop, within duration_s."""
    script, mode = (SCRIPTS / "once.lua", "sequential") if mode == "once" else (SCRIPTS / "requests.lua", mode)
    command = ["wrk", "--latency", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(duration_s))}s"]
    command += ["--timeout", "10s", "-s", str(script)]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command += [url, "--", str(requests), mode, str(THREADS)]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert process.stdout is not None
    output, shares_done = [], 0
    async for line in process.stdout:
        output.append(line.decode(errors="replace"))
        if line.startswith(SHARE_DONE):  # once.lua: wrk runs for its duration unless interrupted
            shares_done += 1
            if shares_done == THREADS:
                process.send_signal(signal.SIGINT)  # wrk stops and reports, as on Ctrl-C
    if await process.wait() != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{''.join(output)}")
    return parse("".join(output))


def parse(output: str) -> Result:
    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"unexpected wrk output (no {pattern!r}):\n{output}")
        return match

    def latency(percent: int) -> float:
        value, unit = find(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$").groups()
        return float(value) * UNITS[unit]

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Result(
        rps=float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=latency(50),
        p99_ms=latency(99),
        requests=int(find(r"(\d+) requests in ").group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )
