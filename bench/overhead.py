"""Platform overhead: the same training as a bare PyTorch loop and through the platform.

(a) bare: a new Python process each time (as each platform job is a new Ray worker), the
    model and data built with `fovea.tasks`, a plain forward/backward/step loop;
(b) platform: a real `fovea up` (HTTP API -> scheduler -> Ray worker -> engine -> MLflow),
    started once and kept up for the whole run; `--split`: `fovea api` and
    `fovea scheduler` as two processes instead.

Both train the same model on the same data for the same epochs and batch size with the same
number of CPU threads. Each run is a new process on both sides because the speed of one
process is not the speed of the next: on the 2-core machine of bench/RESULTS.md, one process ran
the loop at 244.8 and 241.4 images/s twice, the next at 232.6 and 233.4 (what the memory
it happened to get gives), so a bare side run in the script's own process made every ratio
of a run hang on one draw. Throughput is steady state: training images per second of the
training steps, leaving out the first 10% of the first epoch's steps (warm-up) and all
evaluation.

On a shared machine the load changes while a benchmark runs, so the two sides are
interleaved in pairs (a b, b a, a b, ...: 8 by default) and each pair gives one ratio. The
verdict is about the median ratio, through its distribution-free confidence interval (the
sign test's: with n pairs, the k-th lowest and k-th highest ratios, k the largest for which
fewer than k of n fair coin flips come up heads with probability at most (1 - confidence)
/ 2; 90% by default, so 5 pairs give [min, max] at 93.8%, 8 pairs [2nd lowest, 2nd
highest] at 93.0%).
PASS when the whole interval is at or above the goal, FAIL when it is all below, and when
it straddles the goal the machine was too noisy to tell: "NO VERDICT", exit 2. More pairs
narrow the interval, so a noisy machine can still give a verdict, given the time. No
assumption about the noise's shape is made; the pairs need only be independent, which
the interleaving helps. The MLflow share is the median over the platform runs, judged by
the wall time of the calls (any thread) and by their CPU, both under `--mlflow-goal`.
One untimed run of each side comes first (a stack that has just started still starts its
own parts).

The CPU the control plane takes while a job trains is read from /proc for every process
of the stack (the server, Ray's daemons and idle workers) apart from the job's own:
cycles the training did not get, a figure that does not move with the host's speed.
Run: `make bench` (or `python bench/overhead.py --help`).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from procs import JOB, TreeSampler  # bench/procs.py and bench/stack.py (the script's folder)
from stack import REPO, running_stack, train

FLOWERS = REPO.parent / "shared" / "datasets" / "classification" / "flowers5"
WARMUP_FRACTION = 0.1


def bare_data(args: argparse.Namespace) -> Any:
    """The dataset, decoded once and reused by every bare run."""
    from fovea.tasks import DataConfig, get_task

    task = get_task("classification")
    return task.build_data(
        DataConfig(uri=args.dataset, format=args.format, image_size=args.image_size, seed=args.seed)
    )


def bare_loop(args: argparse.Namespace, data: Any) -> float:
    from fovea.tasks import ModelConfig, TrainConfig, get_task
    from fovea.tasks.engine import make_loaders
    from fovea.tasks.optim import build_optimizer

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.cpus)
    task = get_task("classification")
    model = task.build_model(ModelConfig(arch=args.arch), num_classes=len(data.class_names))
    model.train()
    # The engine's loaders and optimizer (AdamW, no decay on norms and biases): the
    # comparison measures the platform around the loop, not a different pipeline or step.
    config = TrainConfig(batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    opt = build_optimizer(model, config)
    loader, _, _ = make_loaders(data, config, device=torch.device("cpu"))
    skip = max(1, int(len(loader) * WARMUP_FRACTION))
    images, seconds = 0, 0.0
    for epoch in range(args.epochs):
        tick = time.perf_counter()
        for step, (x, y) in enumerate(loader):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            now = time.perf_counter()
            if epoch > 0 or step >= skip:
                images += x.shape[0]
                seconds += now - tick
            tick = now
    return images / seconds


def platform_spec(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": "bench-overhead",
        "task": "classification",
        "dataset": {"uri": args.dataset, "format": args.format},
        "model": {"arch": args.arch},
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "image_size": args.image_size,
            "seed": args.seed,
            "scheduler": "constant",
            "warmup_epochs": 0,
            "early_stopping_patience": None,
        },
        "resources": {"cpus": args.cpus},
        "register_as": "bench-overhead",
    }


def platform_run(http: Any, args: argparse.Namespace, roots: list[int]) -> dict[str, Any]:
    """One job through the running stack: its throughput, the worker's timings and the CPU
    seconds of each part of the stack meanwhile."""
    sampler = TreeSampler(roots).start()
    submitted = time.monotonic()
    job = train(http, platform_spec(args), poll_s=2.0)  # a client asking as the dashboard does
    wall = time.monotonic() - submitted
    sampler.stop()
    # while it trained: from the first to the last sample in which the job used most cores
    window = sampler.busy_window(JOB, cores=0.75 * args.cores) or (0, -1)
    done = next(e for e in job["events"] if e.get("to_state") == "succeeded")
    return {
        "job_wall_s": wall,
        "cpu_s": sampler.by_role(),
        "train_window_s": sampler.seconds(*window),
        "train_cpu_s": sampler.by_role(*window),
        **done["data"],
    }


def spread(values: list[float]) -> float:
    """(max - min) / median: how far the runs disagree."""
    return (max(values) - min(values)) / statistics.median(values)


def median_interval(values: list[float], confidence: float) -> tuple[float, float, float] | None:
    """A distribution-free interval for the median of `values`' population: (low, high, its
    confidence, at least `confidence`), or None when there are too few values for it.

    The median lies below the k-th lowest of n values only when fewer than k of them fall
    below it: Binomial(n, 1/2) < k. So [k-th lowest, k-th highest] holds it with
    probability 1 - 2 P(B < k); k is the largest keeping each tail within (1 - confidence)/2.
    """
    n, tail = len(values), (1 - confidence) / 2
    below = 0.0  # P(B < k), for the k reached
    k = 0
    while k < n:
        if below + math.comb(n, k) / 2**n > tail:
            break
        below += math.comb(n, k) / 2**n
        k += 1
    if k == 0:
        return None
    ordered = sorted(values)
    return ordered[k - 1], ordered[n - k], 1 - 2 * below


def fewest_pairs(confidence: float) -> int:
    """The fewest values that give `median_interval` at this confidence."""
    n = 1
    while median_interval([0.0] * n, confidence) is None:
        n += 1
    return n


def bare_run(args: argparse.Namespace) -> float:
    """`bare_loop` in a new process (this script with --bare-child): its images/s."""
    argv = [sys.executable, __file__, "--bare-child", "--dataset", args.dataset]
    for flag in ("arch", "image_size", "epochs", "batch_size", "lr", "cpus", "seed"):
        argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    sampler = TreeSampler([os.getpid()]).start()  # the observer costs both sides alike
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    sampler.stop()
    if out.returncode != 0:
        raise SystemExit(f"the bare loop failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def interleaved(args: argparse.Namespace) -> tuple[list[float], list[dict[str, Any]]]:
    """`args.pairs` pairs, the order alternating so that a load trend hits both sides alike."""
    bare: list[float] = []
    plat: list[dict[str, Any]] = []
    with running_stack(split=args.split) as running:
        http, roots = running.http, running.pids
        warm_bare, warm_plat = bare_run(args), platform_run(http, args, roots)
        print(
            f"warm-up (not counted): bare {warm_bare:7.1f}  platform "
            f"{warm_plat['train_images_per_s']:7.1f} images/s",
            flush=True,
        )
        for pair in range(args.pairs):
            sides = ("bare", "platform") if pair % 2 == 0 else ("platform", "bare")
            for side in sides:
                if side == "bare":
                    bare.append(bare_run(args))
                else:
                    plat.append(platform_run(http, args, roots))
            b, p = bare[-1], plat[-1]["train_images_per_s"]
            print(
                f"pair {pair + 1} ({sides[0]} first): bare {b:7.1f}  platform {p:7.1f} "
                f"images/s  ratio {p / b:.3f}   load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    return bare, plat


def control_plane(args: argparse.Namespace, plat: list[dict[str, Any]]) -> None:
    """The stack's CPU apart from the job's own processes, by part: while each job trained,
    and over its whole run."""
    for cpu, seconds, title in (
        ("train_cpu_s", "train_window_s", "while the job trained"),
        ("cpu_s", "job_wall_s", "over the whole job (start, data, MLflow at the end)"),
    ):
        roles = sorted({r for p in plat for r in p[cpu]} - {JOB})
        shares = {r: [p[cpu].get(r, 0.0) / p[seconds] for p in plat] for r in roles}
        total = statistics.median(sum(shares[r][i] for r in roles) for i in range(len(plat)))
        print(
            f"  control plane CPU {title}: median {total:.2%} of one core "
            f"= {total / args.cores:.2%} of the {args.cores} cores"
        )
        print("    " + ", ".join(f"{r} {statistics.median(shares[r]):.2%}" for r in roles))


def report(args: argparse.Namespace, bare: list[float], plat: list[dict[str, Any]]) -> int:
    ratios = [p["train_images_per_s"] / b for b, p in zip(bare, plat, strict=True)]
    ratio = statistics.median(ratios)
    interval = median_interval(ratios, args.confidence)
    assert interval is not None  # main() asks for at least fewest_pairs(confidence) pairs
    low, high, level = interval
    stack = "fovea api + fovea scheduler (two processes)" if args.split else "fovea up"
    print(f"\nstack: {stack}")
    print(
        f"\n(a) bare PyTorch loop     median {statistics.median(bare):8.1f} images/s "
        f"(spread {spread(bare):.1%})"
    )
    through = [p["train_images_per_s"] for p in plat]
    print(
        f"(b) through the platform  median {statistics.median(through):8.1f} images/s "
        f"(spread {spread(through):.1%})"
    )
    print(
        f"ratio (b)/(a) per pair    {', '.join(f'{r:.3f}' for r in ratios)}: median "
        f"{ratio:.3f}, {level:.1%} interval for it [{low:.3f}, {high:.3f}]"
    )
    fit = [p["timings"]["fit_s"] for p in plat]
    in_fit = [p["timings"]["mlflow_fit_s"] / f for p, f in zip(plat, fit, strict=True)]
    cpu_in_fit = [p["timings"]["mlflow_cpu_fit_s"] / f for p, f in zip(plat, fit, strict=True)]
    blocked = [p["timings"]["mlflow_blocking_fit_s"] / f for p, f in zip(plat, fit, strict=True)]
    fixed = [
        p["timings"]["mlflow_blocking_s"] - p["timings"]["mlflow_blocking_fit_s"] for p in plat
    ]
    walls = [p["job_wall_s"] for p in plat]
    print(
        f"platform job wall time    median {statistics.median(walls):8.1f} s (submit to succeeded)"
    )
    control_plane(args, plat)
    mlflow_wall, mlflow_cpu = statistics.median(in_fit), statistics.median(cpu_in_fit)
    print(
        f"  MLflow calls while training  median {mlflow_wall:.2%} of the training time by "
        f"their wall time (any thread; max {max(in_fit):.2%}), {mlflow_cpu:.2%} by their CPU "
        f"(target < {args.mlflow_goal:.0%})"
    )
    print(f"  training thread blocked on MLflow  median {statistics.median(blocked):.2%}")
    print(
        f"  fixed MLflow cost after training (figures, model, registration)  median "
        f"{statistics.median(fixed):.1f} s per job, outside the training loop"
    )
    mlflow_ok = max(mlflow_wall, mlflow_cpu) < args.mlflow_goal
    mlflow_said = f"MLflow {mlflow_wall:.2%} {'<' if mlflow_ok else '>='} {args.mlflow_goal:.0%}"
    if not mlflow_ok:
        print(f"verdict: {mlflow_said} -> FAIL")
        return 1
    if low < args.goal <= high:
        print(
            f"NO VERDICT: the {level:.1%} interval [{low:.3f}, {high:.3f}] for the median "
            f"ratio straddles the goal {args.goal}; the machine was too noisy to tell with "
            f"{len(ratios)} pairs. Rerun with more --pairs or on a quieter machine. "
            f"({mlflow_said})"
        )
        return 2
    passed = low >= args.goal
    print(
        f"verdict: the median ratio's {level:.1%} interval [{low:.3f}, {high:.3f}] is "
        f"{'at or above' if passed else 'below'} {args.goal}; {mlflow_said} "
        f"-> {'PASS' if passed else 'FAIL'}"
    )
    return 0 if passed else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_ds = str(FLOWERS) if FLOWERS.is_dir() else "builtin://digits"
    parser.add_argument("--dataset", default=default_ds)
    parser.add_argument("--arch", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pairs",
        type=int,
        default=8,
        help="interleaved bare/platform pairs (8: the fewest whose 90%% interval leaves out "
        "the lowest and the highest ratio, so one run the host disturbed cannot decide)",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.90,
        help="of the interval for the median ratio that a verdict needs (two-sided)",
    )
    parser.add_argument("--goal", type=float, default=0.97, help="the median ratio's")
    parser.add_argument(
        "--mlflow-goal", type=float, default=0.01, help="MLflow's share of the training time"
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="the API and the scheduler as two processes (fovea api + fovea scheduler)",
    )
    parser.add_argument("--bare-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0.5 <= args.confidence < 1:
        parser.error(f"--confidence must be in [0.5, 1), got {args.confidence}")
    need = max(3, fewest_pairs(args.confidence))
    if args.pairs < need:
        parser.error(
            f"--pairs must be at least {need} for a {args.confidence:.0%} interval for the "
            f"median ratio (at least 3 in any case: fewer cannot tell noise from overhead)"
        )
    args.cores = os.cpu_count() or 1
    builtin = args.dataset.startswith("builtin://")
    args.format = "builtin" if builtin else "imagefolder"
    args.arch = args.arch or ("smallcnn" if builtin else "resnet18")
    args.image_size = args.image_size or (32 if builtin else 64)
    if args.bare_child:  # one bare run for the parent (bare_run): prints its images/s
        print(bare_loop(args, bare_data(args)))
        return

    print(
        f"dataset {args.dataset}\nmodel {args.arch} @ {args.image_size}px, "
        f"{args.epochs} epochs, batch {args.batch_size}, {args.cpus} CPU threads, "
        f"{args.pairs} interleaved pairs"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    bare, plat = interleaved(args)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    sys.exit(report(args, bare, plat))


if __name__ == "__main__":
    main()
