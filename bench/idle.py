"""Idle CPU of `fovea up`: the whole process tree (API, scheduler, local Ray), no job.

Starts a real `fovea up` in a temporary home, lets it settle (`--settle` s: Ray's start-up
and the first ticks), then reads the CPU seconds (user + system, from /proc) of the server
and every process under it over `--seconds` s, and prints the share of one core, split by
process, with the load average before and after. Goal: under 1% of one core.

    python bench/idle.py [--seconds 30] [--settle 20] [--after-job]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stack import REPO, TOKEN, free_port

TICKS = os.sysconf("SC_CLK_TCK")
TINY_JOB = {
    "name": "idle-bench",
    "task": "classification",
    "dataset": {"uri": "builtin://digits"},
    "model": {"arch": "smallcnn"},
    "train": {"epochs": 1, "image_size": 16, "batch_size": 64},
    "resources": {"cpus": 1},
}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def _name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in cmd if w]
    if not words:
        return "?"
    if any(w == "fovea" or w.endswith("/fovea") for w in words) or "fovea" in words[:3]:
        return "fovea up (API + scheduler)"
    exe = Path(words[0]).name
    if exe.startswith("python") and len(words) > 1:
        script = Path(words[1]).name if not words[1].startswith("-") else " ".join(words[1:3])
        return f"python {script}"[:60]
    return exe[:60]


def tree(root: int) -> dict[int, float]:
    """CPU seconds of `root` and all its descendants, by pid."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            got = _stat(int(entry.name))
            if got is not None:
                stats[int(entry.name)] = got
    keep, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in keep:
                keep.add(pid)
                frontier.append(pid)
    return {pid: stats[pid][1] for pid in keep if pid in stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument(
        "--after-job", action="store_true", help="run one tiny job first, then measure"
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fovea-idle-"))
    port = free_port()
    env = {
        **os.environ,
        "FOVEA_HOME": str(home),
        "FOVEA_PORT": str(port),
        "FOVEA_API_TOKEN": TOKEN,
        "FOVEA_DATA_ROOTS": str(home),
    }
    with open(home / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "fovea", "up"], env=env, stdout=log, stderr=log, cwd=REPO
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"fovea up did not start; see {home / 'server.log'}")
            time.sleep(0.5)
        if args.after_job:
            http = httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=60,
            )
            job = http.post("/jobs", json=TINY_JOB).json()
            while job["state"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(0.5)
                job = http.get(f"/jobs/{job['id']}").json()
            print(f"after one tiny job ({job['state']})")
        time.sleep(args.settle)
        load_before = load()
        before = tree(server.pid)
        started = time.monotonic()
        time.sleep(args.seconds)
        after = tree(server.pid)
        elapsed = time.monotonic() - started
        load_after = load()
        by_name: dict[str, float] = {}
        for pid, cpu in after.items():
            name = _name(pid)
            by_name[name] = by_name.get(name, 0.0) + cpu - before.get(pid, 0.0)
        total = sum(by_name.values())
        print(
            f"fovea up idle for {elapsed:.1f} s ({len(after)} processes): {total:.2f} CPU-s = "
            f"{100 * total / elapsed:.2f}% of one core (goal < 1%); cores {os.cpu_count()}, "
            f"load average before {load_before}, after {load_after}"
        )
        for name, cpu in sorted(by_name.items(), key=lambda kv: -kv[1]):
            print(f"  {100 * cpu / elapsed:6.2f}%  {cpu:6.2f} CPU-s  {name}")
    finally:
        server.send_signal(2)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
