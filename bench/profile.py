"""`--profile DIR`: py-spy samples the gateway during a scenario and a summary says where its time went.

Each scenario leaves DIR/<backend>-<scenario>.txt: the share of samples per component (a sample
counts once for every component on its stack, so shares overlap) and the top functions by own time.
The event loop's thread is where a callback's or a read's time is spent, so it is summarised on
its own first, then every thread together. The raw collapsed stacks are kept beside it for flame
graphs.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

RATE_HZ = 250
TOP = 20
# The first of these a frame's file path holds names its component.
COMPONENTS = (
    "app/api",
    "app/tasks",
    "app/reads",
    "app/outbox",
    "app/providers",
    "app/db",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "starlette",
    "uvicorn",
    "httptools",
    "httpx",
    "logging",
    "json",
    "asyncio",
)


@contextlib.contextmanager
def profiled(pid: int | None, output: Path | None, name: str) -> Iterator[None]:
    """Sample process `pid` while the block runs, if output (a directory) is given."""
    if output is None or pid is None:
        yield
        return
    output.mkdir(parents=True, exist_ok=True)
    raw = output / (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".raw")
    # Installed beside the Python running the bench (the project's test extra), or on PATH.
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy") or "py-spy"
    command = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(RATE_HZ),
        "--threads",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(raw),
    ]
    sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        sampler.wait(timeout=60)
        if raw.exists():
            collapsed = raw.read_text()
            main = "\n".join(line for line in collapsed.splitlines() if MAIN_THREAD.match(line))
            parts = ["## Main thread (the event loop)", summary(main), "## All threads", summary(collapsed)]
            raw.with_suffix(".txt").write_text("\n".join(parts))


# py-spy --threads starts each stack with its thread: `thread (ID): NAME;frame;frame... count`.
MAIN_THREAD = re.compile(r"thread \(\d+\): MainThread;")
THREAD = re.compile(r"^thread \(\d+\): [^;]*;")


def summary(collapsed: str) -> str:
    """Component shares and top own-time functions of py-spy's collapsed stacks."""
    own, components, total = Counter[str](), Counter[str](), 0
    for line in collapsed.splitlines():
        stack, _, count_text = THREAD.sub("", line).rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        total += count
        own[frames[-1]] += count
        for component in {_component(frame) for frame in frames} - {None}:
            components[component] += count
    if not total:
        return "no samples\n"
    lines = [f"{total:,} samples at {RATE_HZ} Hz", "", "| component (inclusive) | share |", "|---|---|"]
    lines += [f"| {name} | {count / total:.1%} |" for name, count in components.most_common()]
    lines += ["", "| function (own time) | share |", "|---|---|"]
    lines += [f"| {frame} | {count / total:.1%} |" for frame, count in own.most_common(TOP)]
    return "\n".join(lines) + "\n"


def _component(frame: str) -> str | None:
    return next((name for name in COMPONENTS if f"{name}/" in frame or f"/{name}.py" in frame), None)
