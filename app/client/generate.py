"""`imagehook generate`: submit a generation, optionally wait for it with progress, and save the images."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TextIO

import httpx

from app.client import Imagehook, ImagehookError, Status, WaitTimeoutError

DEFAULT_URL = "http://127.0.0.1:8000"
# argparse stores these options under their API names (dest=), so the request is built by name.
FIELDS = ("aspectRatio", "resolution", "outputFormat", "numImages", "imageInput")
CLEAR_LINE = "\r\033[K"
Connect = Callable[[str, str], Imagehook]


def add_generate_command(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser("generate", help="submit a generation; with --wait or --out, wait and fetch it")
    generate.add_argument("prompt")
    generate.add_argument("--model", help="default: the server's (nano-banana-pro)")
    generate.add_argument("--aspect-ratio", dest="aspectRatio", metavar="R", help="e.g. 16:9; default: the model's")
    generate.add_argument("--resolution", metavar="R", help="1K, 2K or 4K; default: the model's")
    generate.add_argument(
        "--output-format", dest="outputFormat", metavar="F", help="png, jpg, ...; default: the model's"
    )
    generate.add_argument(
        "--num-images", dest="numImages", metavar="N", type=int, help="how many images; default: the model's"
    )
    generate.add_argument(
        "--image", dest="imageInput", metavar="URL", nargs="+", action="extend", help="input images; default: none"
    )
    generate.add_argument(
        "--cancel-after", metavar="D", help="cancel the task if unfinished after D (90, 30s, 5m, 1h30m); default: never"
    )
    generate.add_argument("--wait", action="store_true", help="wait for the task and print its image URL(s)")
    generate.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="wait, then save the image here (image.png, image-2.png, ...); default: not saved",
    )
    generate.add_argument("--timeout", type=float, default=600.0, metavar="S", help="seconds to wait (default 600)")
    generate.add_argument(
        "--url", default=os.environ.get("IMAGEHOOK_URL", DEFAULT_URL), help=f"default $IMAGEHOOK_URL or {DEFAULT_URL}"
    )
    generate.add_argument("--key", default=os.environ.get("IMAGEHOOK_KEY"), help="API key; default $IMAGEHOOK_KEY")
    generate.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace, connect: Connect = Imagehook) -> None:
    """Exit status: 0 done, 1 the task failed or the wait timed out, 2 no key or an HTTP/connection error.

    `connect(url, key)` makes the client: the seam tests use to put a mock transport underneath.
    """
    if not args.key:
        _exit(2, "no API key: pass --key or set IMAGEHOOK_KEY")
    try:
        with connect(args.url, args.key) as client:
            code = _generate(client, args)
    except ImagehookError as exc:
        _exit(2, str(exc))
    except httpx.TransportError as exc:
        # Not always the gateway: downloads go to the provider's storage.
        _exit(2, f"request failed: {type(exc).__name__}: {exc}")
    except WaitTimeoutError as exc:
        _exit(1, str(exc))
    if code:
        sys.exit(code)


def _generate(client: Imagehook, args: argparse.Namespace) -> int:
    started = time.monotonic()
    fields = {field: getattr(args, field) for field in FIELDS}
    task_id = client.generate(args.prompt, model=args.model, cancel_after=args.cancel_after, **fields)["taskId"]
    print(task_id, flush=True)
    if not (args.wait or args.out):
        return 0
    with Progress(sys.stderr, started) as progress:
        status = client.wait(task_id, timeout=args.timeout, on_update=progress.update)
    if status["state"] != "success":
        print(f"imagehook: task {task_id} failed: {status.get('failMsg')}", file=sys.stderr)
        return 1
    print(*status["imageUrls"], sep="\n")
    if args.out:
        save_images(client, status["imageUrls"], args.out)
    return 0


def save_images(client: Imagehook, urls: list[str], out: Path) -> None:
    """The first image to `out`, the others beside it as <stem>-2<suffix>, <stem>-3<suffix>, ..."""
    for number, url in enumerate(urls, start=1):
        path = out if number == 1 else out.with_name(f"{out.stem}-{number}{out.suffix}")
        path.write_bytes(client.download(url))
        print(path)


class Progress:
    """One line per state change with the elapsed time; on a terminal, also a spinner redrawn in place."""

    FRAMES = "|/-\\"

    def __init__(self, stream: TextIO, started: float) -> None:
        self._stream, self._started = stream, started
        self._state = "submitted"
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True) if stream.isatty() else None

    def __enter__(self) -> Progress:
        if self._ticker is not None:
            self._ticker.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        if self._ticker is not None:
            self._ticker.join()
            self._write(CLEAR_LINE)

    def update(self, status: Status) -> None:
        self._state = status["state"]
        # On a terminal the spinner's line is cleared first, so the state line replaces it.
        clear = CLEAR_LINE if self._ticker else ""
        self._write(f"{clear}  {self._state}  {self._elapsed():.1f}s\n")

    def _tick(self) -> None:
        # A long-poll can last a minute: the spinner shows the wait is alive meanwhile.
        for frame in itertools.cycle(self.FRAMES):
            if self._done.wait(0.1):
                return
            self._write(f"\r{frame} {self._state}  {self._elapsed():.1f}s")

    def _write(self, text: str) -> None:
        with self._lock:
            self._stream.write(text)
            self._stream.flush()

    def _elapsed(self) -> float:
        return time.monotonic() - self._started


def _exit(code: int, message: str) -> NoReturn:
    print(f"imagehook: {message}", file=sys.stderr)
    sys.exit(code)
