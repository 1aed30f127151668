"""Real uvicorn servers for end-to-end tests: in a thread, or in a child process that can be killed.
free_port is the benchmark's own (bench needs no test dependency, so the tests borrow from it)."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bench.servers import free_port


class PromptServer(uvicorn.Server):
    """uvicorn's Server, whose main loop wakes as soon as it is asked to stop rather than at its next
    0.1 s tick: every end-to-end test stops a gateway or two, and the ticks add up."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.wake = asyncio.Event()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.1)


class ThreadServer:
    """An ASGI app under uvicorn on 127.0.0.1, on its own event loop in a thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = PromptServer(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve()

        asyncio.run(serve())

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.server.wake.set)
        self.thread.join(timeout=30)
        # A server still running would keep its database connections; fail here, not in later tests,
        # with every thread's stack to show where it is stuck.
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(dump_tasks, self.loop)
            time.sleep(0.5)
            faulthandler.dump_traceback(all_threads=True)
        assert not self.thread.is_alive(), f"server on port {self.port} did not stop"


def dump_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Where each of the loop's tasks waits, to stderr."""
    for task in asyncio.all_tasks(loop):
        task.print_stack(file=sys.stderr)


class ProcessServer:
    """`python -m app serve` in a child process, so a test can SIGKILL it mid-flight, or read its whole
    log (`log_file`: where its output goes)."""

    def __init__(self, env: dict[str, str], port: int, log_file: Path | None = None) -> None:
        self.env, self.port, self.log_file = env, port, log_file
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ProcessServer:
        command = [sys.executable, "-m", "app", "serve", "--port", str(self.port)]
        if self.log_file is None:
            self.process = subprocess.Popen(command, env={**os.environ, **self.env})
        else:
            with self.log_file.open("ab") as sink:
                output = {"stdout": sink, "stderr": subprocess.STDOUT}
                self.process = subprocess.Popen(command, env={**os.environ, **self.env}, **output)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("gateway did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
