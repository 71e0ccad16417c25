"""Dataset manifests, and schedules that skip a retrain when the data did not change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch

from fovea.tasks.data.manifest import dataset_manifest
from fovea.tracking import RunLogger, log_model
from fovea.tracking.champion import TAG_DATASET
from fovea.tracking.gate import on_validation_metrics
from tests.support.schedules import TEMPLATE, events, job_count
from tests.support.schedules import make_schedule as _make_schedule

T0 = datetime(2026, 3, 2, 9, 0, 10, tzinfo=UTC)


def folder(root: Path) -> Path:
    for cls, n in (("daisy", 3), ("rose", 2)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / cls / f"{i}.jpg").write_bytes(bytes([i]) * (100 + i))
    (root / ".cache").mkdir(exist_ok=True)
    (root / ".cache" / "x.bin").write_bytes(b"ignored")
    (root / "daisy" / ".DS_Store").write_bytes(b"ignored")
    return root


def test_digest_follows_the_files(tmp_path: Path) -> None:
    root = folder(tmp_path / "ds")
    first = dataset_manifest(str(root))
    assert first.digest.startswith("sha256:") and len(first.digest) == 71
    assert (first.files, first.folders, first.mode) == (5, {"daisy": 3, "rose": 2}, "stat")
    assert first.bytes == 100 + 101 + 102 + 100 + 101
    assert dataset_manifest(str(root)).digest == first.digest  # stable

    (root / "rose" / "2.jpg").write_bytes(b"new labelled image")
    grown = dataset_manifest(str(root))
    assert grown.digest != first.digest and grown.folders["rose"] == 3

    content = dataset_manifest(str(root), mode="content")
    stamp = (root / "daisy" / "0.jpg").stat().st_mtime_ns
    os.utime(root / "daisy" / "0.jpg", ns=(stamp + 10**9, stamp + 10**9))  # touch
    assert dataset_manifest(str(root)).digest != grown.digest  # stat mode sees mtimes
    assert dataset_manifest(str(root), mode="content").digest == content.digest

    (root / "daisy" / "0.jpg").rename(root / "rose" / "0b.jpg")  # relabelled
    assert dataset_manifest(str(root), mode="content").digest != content.digest


def test_a_file_list_counts_the_missing(tmp_path: Path) -> None:
    root = folder(tmp_path / "ds")
    subset = dataset_manifest(str(root), mode="content", files=["rose/0.jpg", "rose/9.jpg"])
    assert (subset.files, subset.missing) == (1, 1)
    builtin = dataset_manifest("builtin://digits", files=["#3", "#1"])
    assert builtin.mode == "uri" and builtin.files == 2
    assert builtin.digest == dataset_manifest("builtin://digits", files=["#1", "#3"]).digest
    assert builtin.digest != dataset_manifest("builtin://digits").digest
    with pytest.raises(FileNotFoundError):
        dataset_manifest(str(tmp_path / "nope"))


def test_importing_the_manifest_does_not_import_torch() -> None:
    code = (
        "import sys, fovea.tasks.data.manifest; print('torch' in sys.modules, 'PIL' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_retrain_on_unchanged_data_is_skipped(sessions, tmp_path: Path) -> None:
    from fovea.platform.retraining.fires import fire_due_schedules
    from fovea.platform.store import transaction

    root = folder(tmp_path / "data" / "flowers")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    manifest = dataset_manifest(str(root))
    with RunLogger(
        tracking_uri=tracking_uri, experiment="e", artifact_root=tmp_path / "art"
    ) as run:
        log_model(
            logger_or_run_id=run,
            task_name="classification",
            card={"task": "classification", "arch": "smallcnn", "num_classes": 2},
            state_dict={"w": torch.zeros(2)},
            registered_name="digits",
            metrics={"top1": 0.8},
            main_metric="top1",
            decider=on_validation_metrics,
            version_tags={TAG_DATASET: json.dumps({"digest": manifest.digest, "mode": "stat"})},
        )
    template = {**TEMPLATE, "dataset": {"uri": str(root)}}
    s = _make_schedule(
        sessions, now=T0, data_roots=[tmp_path / "data"], cron="0 * * * *", template=template
    )

    def fire(at: datetime) -> None:
        with transaction(sessions) as db:
            fire_due_schedules(
                session=db, now=at, data_roots=[tmp_path / "data"], tracking_uri=tracking_uri
            )

    fire(T0 + timedelta(hours=1))
    (skip,) = events(sessions, s.id, "skip")
    assert skip.data["reason"] == "data_unchanged" and skip.data["champion_version"] == 1
    assert "data unchanged since champion digits v1 was trained" in skip.message
    assert job_count(sessions) == 0

    (root / "rose" / "new.jpg").write_bytes(b"one more labelled rose")
    fire(T0 + timedelta(hours=2))
    assert job_count(sessions) == 1

    with transaction(sessions) as db:  # switched off: fires on unchanged data too
        from fovea.platform.retraining.service import SchedulePatch, update_schedule

        update_schedule(
            session=db,
            schedule_id=s.id,
            patch=SchedulePatch(skip_if_data_unchanged=False, overlap="queue"),
            data_roots=[tmp_path / "data"],
            now=T0 + timedelta(hours=2),
        )
    (root / "rose" / "new.jpg").unlink()
    fire(T0 + timedelta(hours=3))
    assert job_count(sessions) == 2
