"""Platform overhead: the same training as a bare PyTorch loop and through the platform.

(a) bare: one process, the model and data built with `fovea.tasks`, a plain
    forward/backward/step loop;
(b) platform: a real `fovea up` (HTTP API -> scheduler -> Ray worker -> engine -> MLflow).

Both train the same model on the same data for the same epochs and batch size with the same
number of CPU threads. Throughput is steady state: training images per second of the
training steps, leaving out the first 10% of the first epoch's steps (warm-up) and all
evaluation. Run: `make bench` (or `python bench/overhead.py --help`).
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
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
FLOWERS = REPO.parent / "shared" / "datasets" / "classification" / "flowers5"
WARMUP_FRACTION = 0.1


def bare_loop(args: argparse.Namespace) -> float:
    from fovea.tasks import DataConfig, ModelConfig, TrainConfig, get_task
    from fovea.tasks.engine import make_loaders

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.cpus)
    task = get_task("classification")
    data = task.build_data(
        DataConfig(uri=args.dataset, format=args.format, image_size=args.image_size, seed=args.seed)
    )
    model = task.build_model(ModelConfig(arch=args.arch), num_classes=len(data.class_names))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    # The engine's loaders: the comparison measures the platform around the loop, not a
    # different data pipeline.
    config = TrainConfig(batch_size=args.batch_size, seed=args.seed)
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


def platform_run(args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix="fovea-bench-"))
    port = 8790
    token = "bench-token"
    env = {
        **os.environ,
        "FOVEA_HOME": str(home),
        "FOVEA_PORT": str(port),
        "FOVEA_API_TOKEN": token,
        "FOVEA_DATA_ROOTS": f"{REPO.parent}:{REPO}",
    }
    with open(home / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "fovea", "up"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                http.get("/health")
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"fovea up did not start; see {home / 'server.log'}") from None
                time.sleep(0.5)
        spec = {
            "name": "bench-overhead",
            "task": "classification",
            "dataset": {"uri": args.dataset, "format": "imagefolder"},
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
        submitted = time.monotonic()
        job = http.post("/jobs", json=spec).json()
        while job["state"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(0.5)
            job = http.get(f"/jobs/{job['id']}").json()
        job_wall = time.monotonic() - submitted
        if job["state"] != "succeeded":
            raise SystemExit(f"platform job {job['state']}: {job['error']}")
        done = next(e for e in job["events"] if e.get("to_state") == "succeeded")
        return {"job_wall_s": job_wall, **done["data"]}
    finally:
        server.send_signal(2)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()


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
    args = parser.parse_args()
    builtin = args.dataset.startswith("builtin://")
    args.format = "builtin" if builtin else "imagefolder"
    args.arch = args.arch or ("smallcnn" if builtin else "resnet18")
    args.image_size = args.image_size or (32 if builtin else 64)

    print(
        f"dataset {args.dataset}\nmodel {args.arch} @ {args.image_size}px, "
        f"{args.epochs} epochs, batch {args.batch_size}, {args.cpus} CPU threads"
    )
    bare = bare_loop(args)
    print(f"(a) bare PyTorch loop     {bare:8.1f} images/s")
    plat = platform_run(args)
    through = plat["train_images_per_s"]
    timings = plat["timings"]
    print(f"(b) through the platform  {through:8.1f} images/s")
    print(f"ratio (b)/(a)             {through / bare:8.3f}   (target >= 0.95)")
    print(f"platform job wall time    {plat['job_wall_s']:8.1f} s (submit to succeeded)")
    print(
        f"  worker wall time        {timings['wall_s']:8.1f} s, of which training "
        f"{timings['fit_s']:.1f} s"
    )
    share = timings["mlflow_s"] / plat["job_wall_s"]
    print(
        f"  MLflow calls            {timings['mlflow_s']:8.2f} s = {share:.2%} of the job's "
        "wall time (target < 2%)"
    )
    fit_blocked = timings["mlflow_blocking_fit_s"]
    print(
        f"  training loop blocked on MLflow {fit_blocked:.3f} s = "
        f"{fit_blocked / timings['fit_s']:.2%} of training; the worker in all "
        f"{timings['mlflow_blocking_s']:.2f} s (run start, artifacts, model registration)"
    )


if __name__ == "__main__":
    main()
