#!/usr/bin/env python3
"""Container health checks for the Fovea images, standard library only.

    fovea-healthcheck http http://127.0.0.1:8742/health
    fovea-healthcheck process "fovea scheduler" tcp postgres:5432 tcp ray-head:6379

Each check is a kind and one argument; every check must pass (exit 0), else the first
failure is printed and the exit status is 1. Kinds:
  http URL         a GET answers 2xx within the timeout
  tcp HOST:PORT    a TCP connection opens
  process TEXT     a process other than this one has TEXT in its command line
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

TIMEOUT_S = 3.0


def check_http(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return f"http {url}: {exc}"
    return None if 200 <= status < 300 else f"http {url}: status {status}"


def check_tcp(address: str) -> str | None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return f"tcp {address}: expected HOST:PORT"
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT_S):
            return None
    except OSError as exc:
        return f"tcp {address}: {exc}"


def check_process(text: str, proc: Path = Path("/proc")) -> str | None:
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended while we looked
        if (
            text in cmdline
            and "fovea-healthcheck" not in cmdline
            and "healthcheck.py" not in cmdline
        ):
            return None
    return f"process {text!r}: not running"


CHECKS: dict[str, Callable[[str], str | None]] = {
    "http": check_http,
    "tcp": check_tcp,
    "process": check_process,
}


def main(argv: list[str]) -> int:
    if not argv or len(argv) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    for kind, arg in zip(argv[::2], argv[1::2], strict=True):
        if kind not in CHECKS:
            print(f"unknown check {kind!r}; valid: {', '.join(CHECKS)}", file=sys.stderr)
            return 2
        problem = CHECKS[kind](arg)
        if problem:
            print(problem, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
