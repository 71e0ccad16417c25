"""Multi-worker scaling: training images/s of one job with 1 worker and with N DDP workers.

Both run through the real backend on a local Ray (the scheduler's path without the HTTP
API): 1 worker is the ordinary one-task job, N workers the Ray Train TorchTrainer group
(gloo on CPU, nccl with --gpus). Same model, data, seed and GLOBAL batch; the cluster's CPUs
are split evenly (1 worker gets all of them as threads, each of N workers 1/N).
Throughput is the engine's steady state (train steps only, first 10% of the first epoch
left out), summed over ranks.

Runs alternate (1, N, N, 1, ...) so a load change hits both; each pair gives one ratio
N-worker / 1-worker; the median is printed with the spread and the load average. On a
machine with C cores, N workers cannot beat one worker using all C cores as threads by
more than the gain of processes over threads, and they pay a gradient all-reduce a step:
the ratio on 2 cores is bounded near 1 (or below), and says nothing about a cluster.
Run: `python bench/ddp.py --help`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fovea.platform.jobs.spec import JobSpec  # noqa: E402
from fovea.workers.backend import RayBackend  # noqa: E402
from fovea.workers.types import JobResult, WorkerJob  # noqa: E402


def make_job(args: argparse.Namespace, home: Path, name: str, workers: int) -> WorkerJob:
    spec = JobSpec.model_validate(
        {
            "name": name,
            "task": "classification",
            "dataset": {"uri": args.dataset},
            "model": {"arch": args.arch},
            "train": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "image_size": args.image_size,
                "seed": 0,
                "early_stopping_patience": None,
            },
            "resources": {"workers": workers, "cpus": args.cpus / workers, "gpus": args.gpus},
            "register_as": None,
            "max_retries": 0,
        }
    )
    return WorkerJob.from_spec(
        spec.model_dump(mode="json"),
        job_id=name,
        attempt=1,
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        artifact_root=str(home / "mlartifacts"),
        experiment="bench-ddp",
        checkpoint_dir=str(home / "checkpoints" / name),
        mlflow_run_id=None,
    )


def run(backend: RayBackend, job: WorkerJob) -> JobResult:
    handle = backend.submit(job)
    while (outcome := backend.poll(handle)) is None:
        backend.drain_status()
        time.sleep(0.5)
    if outcome.result is None or outcome.result.status != "succeeded":
        raise SystemExit(f"{job.job_id} did not succeed: {outcome}")
    return outcome.result


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="builtin://digits")
    parser.add_argument("--arch", default="smallcnn")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="global")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="in all")
    parser.add_argument("--gpus", type=float, default=0.0, help="per worker")
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    home = Path(tempfile.mkdtemp(prefix="fovea-bench-ddp-"))
    backend = RayBackend(num_cpus=args.cpus, num_gpus=int(args.gpus * args.workers))
    rates: dict[int, list[float]] = {1: [], args.workers: []}
    ratios = []
    for pair in range(args.pairs):
        order = (1, args.workers) if pair % 2 == 0 else (args.workers, 1)
        got = {}
        for workers in order:
            result = run(backend, make_job(args, home, f"w{workers}-p{pair}", workers))
            got[workers] = result.train_images_per_s
            rates[workers].append(result.train_images_per_s)
            print(
                f"pair {pair + 1}: {workers} worker(s) {result.train_images_per_s:8.1f} img/s  "
                f"top1 {result.metrics.get('top1', float('nan')):.3f}  "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
        ratios.append(got[args.workers] / got[1])
    backend.shutdown()
    print(
        f"{args.dataset} {args.arch} @ {args.image_size} px, global batch {args.batch_size}, "
        f"{args.epochs} epochs, {args.cpus} CPUs in all"
    )
    for workers, values in rates.items():
        print(
            f"{workers} worker(s): median {statistics.median(values):.1f} img/s "
            f"(spread {spread(values):.1%})"
        )
    print(
        f"scaling ratio {args.workers}/1: median {statistics.median(ratios):.3f} "
        f"(pairs: {', '.join(f'{r:.3f}' for r in ratios)}; spread {spread(ratios):.1%})"
    )
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
