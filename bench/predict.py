"""Prediction throughput: the HTTP API (replica on Ray, logging) against the pyfunc model.

Trains a resnet18 at `--image-size` px (224, the platform's default) for one epoch on
`--per-class` photos of each flowers5 class (a copy, so the epoch is short: the serving
cost depends on the model and its input size, not on how well it learned) through a real
`fovea up` (the model and its drift reference registered as any job's are), then measures
images/s for batches
of 1 and 16 real photos (JPEG bytes):
- direct: `mlflow.pyfunc.load_model(...).predict(uint8 batch)` in this process, the images
  already decoded;
- HTTP: `POST /models/<name>/predict` with the files: upload, decode in the replica,
  predict and profile (statistics, embedding, summary), the prediction log written.
The sides alternate (`--rounds` rounds, same images), so load changes hit all alike; the
table gives the median images/s and the ratio HTTP / direct per batch size (goal >= 0.8
for batch 16), for one HTTP client (latency-bound: upload, decode and logging add to each
request) and for `--clients` concurrent clients (a service's throughput: the API's work
overlaps the replica's). Both sides use `--threads` torch threads.

Run: `python bench/predict.py` (about 5 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from stack import REPO, running_stack, train  # bench/stack.py (the script's folder)

FLOWERS = REPO.parent / "shared" / "datasets" / "classification" / "flowers5"
MODEL = "bench-predict"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=224, help="the model's input side")
    parser.add_argument("--per-class", type=int, default=40, help="training photos per class")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=8, help="requests per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--clients", type=int, default=2, help="concurrent HTTP clients in the second HTTP row"
    )
    args = parser.parse_args()
    import mlflow.pyfunc
    import torch
    from PIL import Image

    torch.set_num_threads(args.threads)
    photos = sorted(FLOWERS.rglob("*.jpg"))[::97][:16]
    files = [(p.name, p.read_bytes()) for p in photos]
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((128, 128))) for p in photos]
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    subset = Path(tempfile.mkdtemp(prefix="fovea-bench-flowers-"))
    for folder in sorted(p for p in FLOWERS.iterdir() if p.is_dir()):
        (subset / folder.name).mkdir()
        for photo in sorted(folder.glob("*.jpg"))[: args.per_class]:
            shutil.copy(photo, subset / folder.name / photo.name)
    spec = {
        "name": MODEL,
        "task": "classification",
        "dataset": {"uri": str(subset), "format": "imagefolder"},
        "model": {"arch": "resnet18"},
        "train": {"epochs": 1, "batch_size": 64, "image_size": args.image_size},
        "resources": {"cpus": args.threads},
        "register_as": MODEL,
    }
    roots = f"{REPO.parent}:{REPO}:{subset}"
    with running_stack(serving_threads=str(args.threads), data_roots=roots) as (http, home):
        train(http, spec)
        mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")

        def direct(batch: int) -> float:
            images = np.stack(arrays[:batch])
            model.predict(images)  # warm
            tick = time.perf_counter()
            for _ in range(args.requests):
                model.predict(images)
            return batch * args.requests / (time.perf_counter() - tick)

        def over_http(batch: int, clients: int = 1) -> float:
            upload = [("files", item) for item in files[:batch]]
            http.post(f"/models/{MODEL}/predict", files=upload).raise_for_status()  # warm

            def client(_: int) -> None:
                for _ in range(args.requests):
                    http.post(f"/models/{MODEL}/predict", files=upload).raise_for_status()

            tick = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(client, range(clients)))
            return batch * args.requests * clients / (time.perf_counter() - tick)

        results: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.rounds):
            for batch in (1, 16):
                results.setdefault(("direct", batch), []).append(direct(batch))
                results.setdefault(("http", batch), []).append(over_http(batch))
                concurrent = over_http(batch, args.clients)
                results.setdefault(("http-concurrent", batch), []).append(concurrent)
        logged = http.get(f"/models/{MODEL}/predictions", params={"limit": 1}).json()["items"]
    print(
        f"\nresnet18 @ {args.image_size} px, flowers5 photos (128 px JPEG), {args.threads} "
        f"threads, {args.rounds} rounds"
    )
    print(
        f"{'batch':>5} {'direct img/s':>13} {'HTTP, 1 client':>15} {'ratio':>6} "
        f"{f'HTTP, {args.clients} clients':>17} {'ratio':>6}"
    )
    for batch in (1, 16):
        d = statistics.median(results[("direct", batch)])
        h = statistics.median(results[("http", batch)])
        c = statistics.median(results[("http-concurrent", batch)])
        print(f"{batch:>5} {d:>13.1f} {h:>15.1f} {h / d:>6.2f} {c:>17.1f} {c / d:>6.2f}")
    print(f"(every HTTP image was logged: newest log row id {logged[0]['id']})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
