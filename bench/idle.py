"""Idle CPU of `fovea up`: the whole process tree (API, scheduler, local Ray), no job.

Starts a real `fovea up` in a temporary home and runs one tiny job (Ray warm: it started
with the stack). Then reads the CPU seconds (user + system, from /proc) of the server and
every process under it over `--seconds` s twice: while the local Ray is still up after
the job, and once the scheduler has stopped it (FOVEA_RAY_IDLE_STOP_S, `--ray-idle-stop`,
default the product's 120 s), with the share of one core split by process and the load
average around each. Last, a second tiny job: what starting Ray again costs the next job.
Goal: under 1% of one core once idle.

    python bench/idle.py [--seconds 30] [--settle 10] [--ray-idle-stop 120] [--split]

`--split` runs `fovea api` and `fovea scheduler` as two processes instead of `fovea up`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.procs import name, trees
from bench.stack import running_stack
from fovea.cli.demo import digits_spec
from fovea.config import Settings

TINY_JOB = digits_spec(name="idle-bench", epochs=1, register_as=None, image_size=16)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(roots: list[int], seconds: float, title: str) -> float:
    """CPU of the roots' trees over `seconds`, printed by process; the share of one core."""
    load_before = load()
    before = trees(roots)
    started = time.monotonic()
    time.sleep(seconds)
    after = trees(roots)
    elapsed = time.monotonic() - started
    load_after = load()
    by_name: dict[str, float] = {}
    for pid, cpu in after.items():
        label = name(pid)
        by_name[label] = by_name.get(label, 0.0) + cpu - before.get(pid, 0.0)
    total = sum(by_name.values())
    share = 100 * total / elapsed
    print(
        f"{title}: {elapsed:.1f} s, {len(after)} processes, {total:.2f} CPU-s = {share:.2f}% "
        f"of one core; load average before {load_before}, after {load_after}"
    )
    for label, cpu in sorted(by_name.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * cpu / elapsed:6.2f}%  {cpu:6.2f} CPU-s  {label}")
    return share


def ray_running(roots: list[int]) -> bool:
    return any(name(pid) in ("raylet", "gcs_server") for pid in trees(roots))


def run_job(http: httpx.Client) -> tuple[str, float]:
    """Submit the tiny job and wait: its end state and seconds from submit to end."""
    started = time.monotonic()
    job = http.post("/jobs", json=TINY_JOB).json()
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.25)
        job = http.get(f"/jobs/{job['id']}").json()
    return job["state"], time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument(
        "--ray-idle-stop",
        type=float,
        default=Settings.model_fields["ray_idle_stop_s"].default,
        help="FOVEA_RAY_IDLE_STOP_S of the stack (0: Ray kept up)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="the API and the scheduler as two processes (fovea api + fovea scheduler)",
    )
    args = parser.parse_args()
    with running_stack(split=args.split, ray_idle_stop_s=str(args.ray_idle_stop)) as running:
        report(args, running.http, running.pids, running.home)


def report(args: argparse.Namespace, http: httpx.Client, roots: list[int], home: Path) -> None:
    """Run the tiny job, measure idle with Ray up, wait for the stop, measure, run again."""
    stack = "fovea api + fovea scheduler" if args.split else "fovea up"
    print(f"{stack}; cores {os.cpu_count()}; FOVEA_RAY_IDLE_STOP_S={args.ray_idle_stop:g}")
    state, warm_s = run_job(http)
    print(f"tiny job with Ray warm: {state} in {warm_s:.1f} s (submit to end)")
    ended = time.monotonic()
    time.sleep(args.settle)
    up = measure(roots, args.seconds, "idle, local Ray still up")
    if args.ray_idle_stop <= 0:
        print(f"Ray is kept up: idle {up:.2f}% of one core (goal < 1%)")
        return
    limit = ended + args.ray_idle_stop + 60
    while ray_running(roots) and time.monotonic() < limit:
        time.sleep(1.0)
    if ray_running(roots):
        raise SystemExit(f"the local Ray still runs {args.ray_idle_stop + 60:.0f} s after "
                         f"the job; see the logs in {home}")  # fmt: skip
    print(f"the scheduler stopped the local Ray {time.monotonic() - ended:.0f} s after the job")
    time.sleep(2.0)
    idle = measure(roots, args.seconds, "idle, local Ray stopped")
    state, cold_s = run_job(http)
    print(
        f"tiny job with Ray stopped: {state} in {cold_s:.1f} s (submit to end; "
        f"+{cold_s - warm_s:.1f} s for starting Ray again)"
    )
    verdict = "meets" if idle < 1.0 else "MISSES"
    print(
        f"idle {stack}: {idle:.2f}% of one core once Ray stopped ({verdict} the < 1% goal); "
        f"{up:.2f}% while Ray is up"
    )


if __name__ == "__main__":
    main()
