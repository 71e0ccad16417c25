"""Detection: learning to the bar on shapes, real-format loaders, bad labels, the assigner,
COCOeval parity, ONNX parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision.ops import batched_nms

from fovea.tasks import DataConfig, ModelConfig, TrainConfig, UserError, get_task
from fovea.tasks.data.shapes import generate_shapes
from fovea.tasks.detection.assigner import task_aligned_assign
from fovea.tasks.detection.data import clean_boxes
from fovea.tasks.detection.model import build_detector
from fovea.tasks.engine import fit
from fovea.tasks.export import export_onnx
from fovea.tasks.preprocess import letterbox
from fovea.tracking.pyfunc import detection_frame

SHAPES = DataConfig(uri="builtin://shapes?n=120&size=64", format="builtin", image_size=64)


def _events() -> tuple[list[tuple[str, str, dict]], object]:
    seen: list[tuple[str, str, dict]] = []
    return seen, lambda kind, message, data=None: seen.append((kind, message, dict(data or {})))


def _all_targets(dataset) -> list[dict[str, torch.Tensor]]:  # type: ignore[no-untyped-def]
    return [dataset[i][1] for i in range(len(dataset))]


# ---- learning: the quality bar --------------------------------------------------------------


def test_yolo_n_learns_shapes_to_the_bar_and_finds_them_in_new_images() -> None:
    """The job tests/e2e/test_detection.py used to train through the whole stack (which now
    checks the plumbing with one epoch), here without HTTP, Ray or MLflow: the same data,
    model, training configuration, seed and thresholds. 800 images of 64 px, 1 to 3 shapes
    each (640 to train, 160 to validate), 10 epochs from scratch."""
    data_config = DataConfig(
        uri="builtin://shapes?n=800&size=64", format="builtin", image_size=64, val_split=0.2
    )
    model_config = ModelConfig(arch="yolo_n", backbone="tiny")
    config = TrainConfig(
        epochs=10, batch_size=32, lr=0.003, weight_decay=0.01, warmup_epochs=1,
        early_stopping_patience=None, seed=0,
    )  # fmt: skip
    task = get_task("detection", train=config)
    bundle = task.build_data(data_config)
    assert len(bundle.train) == 640 and bundle.stats["boxes"] > 800
    torch.manual_seed(0)  # as the worker seeds the initial weights
    model = task.build_model(model_config, num_classes=len(bundle.class_names))
    result = fit(task, model, bundle, config, device=torch.device("cpu"))
    metrics = result.metrics
    assert metrics["map_50"] > 0.5, metrics
    assert 0 < metrics["map"] <= metrics["map_50"]
    assert {"map_75", "mar_100", "ap/circle", "ap/square", "ap/triangle"} <= set(metrics)
    assert {"pr_curves.png", "val_predictions.png"} <= set(result.eval.figures)
    assert "per_class_ap.json" in result.eval.tables

    # served as pyfunc serves it, on images no training saw: boxes, scores, labels per image;
    # most true shapes are found: a box of the right class overlapping it well
    card = json.loads(
        json.dumps(task.model_card(model_config, data_config, class_names=bundle.class_names))
    )
    served = task.load_for_inference(card, result.state_dict)
    shapes = generate_shapes(count=6, size=64, seed=999)
    images = shapes.images.permute(0, 2, 3, 1).numpy()  # uint8 [6, 64, 64, 3]
    out = detection_frame(task.predict_arrays(served, card, images), card)
    assert list(out.columns) == ["boxes", "scores", "labels", "class_names"] and len(out) == 6
    found = total = 0
    for i in range(6):
        predicted = np.array(out["boxes"][i]).reshape(-1, 4)
        for box, label in zip(shapes.boxes[i].numpy(), shapes.labels[i].tolist(), strict=True):
            total += 1
            same = [j for j, k in enumerate(out["labels"][i]) if k == label]
            found += any(_iou(box, predicted[j]) > 0.5 for j in same)
    assert found / total >= 0.6, (found, total, out)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


# ---- the three real formats, as they are ------------------------------------------------------


def test_coco128_loads_with_background_and_grey_images(datasets_dir: Path) -> None:
    seen, events = _events()
    bundle = get_task("detection").build_data(
        DataConfig(uri=str(datasets_dir / "detection/coco128"), format="coco", image_size=160),
        events=events,
    )
    assert len(bundle.class_names) == 80 and bundle.class_names[0] == "person"
    assert bundle.stats["images"] == 128 and bundle.stats["corrupt_images_skipped"] == 0
    assert (bundle.stats["train_images"], bundle.stats["val_images"]) == (102, 26)
    # 939 annotations: 10 crowd regions and 3 boxes under 2 px are dropped, and counted
    assert bundle.stats["crowd_regions_dropped"] == 10
    assert bundle.stats["degenerate_boxes_dropped"] == 3
    assert bundle.stats["boxes"] == 939 - 10 - 3
    assert [kind for kind, _, _ in seen] == ["decoding", "bad_labels"]
    assert seen[1][2]["crowd_regions_dropped"] == 10
    cached = [bundle.train.data, bundle.val.data]  # before augmentation (mosaic adds boxes)
    labels = [labels for data in cached for labels in data.labels]
    assert sum(len(one) == 0 for one in labels) == 2  # the pure background images
    boxes = torch.cat([b for data in cached for b in data.boxes])
    assert boxes.min() >= 0 and boxes.max() <= 160
    image, _ = bundle.val[0]
    assert image.shape == (3, 160, 160)  # the greyscale one included: every image is RGB


def test_coco8_yolo_txt_uses_its_split_and_names(datasets_dir: Path) -> None:
    bundle = get_task("detection").build_data(
        DataConfig(uri=str(datasets_dir / "detection/coco8"), format="yolo", image_size=128)
    )
    assert len(bundle.class_names) == 80 and bundle.class_names[:2] == ["person", "bicycle"]
    assert (bundle.stats["train_images"], bundle.stats["val_images"]) == (4, 4)
    assert bundle.stats["boxes"] > 20
    images, targets = next(iter(DataLoader(bundle.val, batch_size=4, collate_fn=bundle.collate_fn)))
    assert images.shape == (4, 3, 128, 128) and len(targets) == 4


def test_bccd_voc_uses_imagesets_split(datasets_dir: Path) -> None:
    bundle = get_task("detection").build_data(
        DataConfig(uri=str(datasets_dir / "detection/bccd"), format="voc", image_size=96)
    )
    assert bundle.class_names == ["Platelets", "RBC", "WBC"]
    assert (bundle.stats["train_images"], bundle.stats["val_images"]) == (205, 87)
    assert bundle.stats["degenerate_boxes_dropped"] == 2  # two 1x1 "boxes" in the XML
    targets = _all_targets(bundle.val)
    boxes = torch.cat([t["boxes"] for t in targets])
    # 640x480 letterboxed to 96: x scale 0.15, and nothing below the image's 72 rows
    assert boxes[:, 3].max() <= 72 + 1e-4 and boxes.min() >= 0


# ---- bad labels and unparseable files ---------------------------------------------------------


def _image(path: Path, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 30)).save(path)


def test_bad_yolo_labels_are_clipped_dropped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    for split in ("train", "val"):
        _image(tmp_path / f"images/{split}/a.png")
        (tmp_path / f"labels/{split}").mkdir(parents=True)
    (tmp_path / "labels/train/a.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n"  # fine
        "1 0.95 0.5 0.3 0.2\n"  # crosses the right border: clipped
        "7 0.5 0.5 0.2 0.2\n"  # class 7 of 2: dropped
        "0 0.5 0.5 0.0 0.2\n"  # zero width: dropped
    )
    (tmp_path / "labels/val/a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    seen, events = _events()
    bundle = get_task("detection").build_data(
        DataConfig(uri=str(tmp_path), format="yolo", image_size=64), events=events
    )
    expected = {"boxes_clipped": 1, "unknown_class_dropped": 1, "degenerate_boxes_dropped": 1}
    assert {k: bundle.stats[k] for k in expected} == expected
    bad = [event for event in seen if event[0] == "bad_labels"]
    assert bad == [("bad_labels", bad[0][1], {**expected, "crowd_regions_dropped": 0})]
    assert "1 boxes clipped" in bad[0][1]
    target = bundle.val.data.boxes[0], bundle.train.data.boxes[0]
    assert len(target[1]) == 2 and float(target[1][:, 2].max()) == pytest.approx(64.0)


def test_clean_boxes_reasons() -> None:
    from collections import Counter

    counts: Counter = Counter()
    boxes = np.array([[-5, 0, 10, 10], [0, 0, 1, 10], [2, 2, 8, 8], [50, 50, 60, 60]], float)
    kept, labels = clean_boxes(boxes, np.array([0, 0, -1, 1]), width=40, height=40, counts=counts)
    # the last box lies wholly outside: clipped to nothing, so degenerate
    assert counts == Counter(unknown_class_dropped=1, degenerate_boxes_dropped=2, boxes_clipped=1)
    np.testing.assert_array_equal(kept, [[0, 0, 10, 10]])
    assert labels.tolist() == [0]


def test_unparseable_voc_xml_names_file_and_line(tmp_path: Path) -> None:
    _image(tmp_path / "JPEGImages/a.jpg")
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations/a.xml").write_text(
        "<annotation>\n<filename>a.jpg</filename>\n<object><name>x</name>\n</annotation>\n"
    )
    with pytest.raises(UserError, match=r"a\.xml, line 4"):
        get_task("detection").build_data(DataConfig(uri=str(tmp_path), format="voc"))


def test_unparseable_coco_json_names_file_and_line_or_key(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations/instances_train.json"
    path.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(UserError, match=r"instances_train\.json, line 2"):
        get_task("detection").build_data(DataConfig(uri=str(tmp_path), format="coco"))
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
                "annotations": [{"id": 9, "image_id": 1, "category_id": 1}],
                "categories": [{"id": 1, "name": "thing"}],
            }
        )
    )
    with pytest.raises(UserError, match=r"annotations\[0\] \(id 9\) lacks the key 'bbox'"):
        get_task("detection").build_data(DataConfig(uri=str(tmp_path), format="coco"))


def test_unparseable_yolo_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("names: [cat]\n")
    _image(tmp_path / "images/a.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/a.txt").write_text("0 0.5 0.5 0.1 0.1\n0 0.5 oops 0.1 0.1\n")
    with pytest.raises(UserError, match=r"a\.txt, line 2"):
        get_task("detection").build_data(DataConfig(uri=str(tmp_path), format="yolo"))


def test_image_size_must_divide_into_cells() -> None:
    with pytest.raises(UserError, match="multiple of 32"):
        get_task("detection").build_data(
            DataConfig(uri="builtin://shapes?n=10", format="builtin", image_size=50)
        )


# ---- the assigner ---------------------------------------------------------------------------


def test_assigner_picks_points_inside_and_the_centre_cell_of_tiny_boxes() -> None:
    ys, xs = torch.meshgrid(torch.arange(8) * 8 + 4.0, torch.arange(8) * 8 + 4.0, indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten()], dim=-1)  # [64, 2], stride 8
    strides = torch.full((64,), 8.0)
    big, tiny = [8.0, 8.0, 40.0, 40.0], [49.0, 49.0, 52.0, 52.0]  # tiny: inside no centre
    gt_boxes = torch.tensor([[big, tiny]])
    gt_labels = torch.tensor([[0, 1]])
    # predictions as at initialisation: an 8x8 box around every point, middling confidence
    pred_boxes = torch.cat([points - 4, points + 4], dim=-1)[None]  # [1, 64, 4]
    result = task_aligned_assign(
        pred_scores=torch.full((1, 64, 2), 0.5),
        pred_boxes=pred_boxes,
        points=points,
        strides=strides,
        gt_boxes=gt_boxes,
        gt_labels=gt_labels,
        top_k=10,
    )
    fg = result.foreground[0]
    assert int(fg.sum()) == 11  # 10 of the 16 points inside the big box + the tiny one's
    inside_big = (points[fg] > 8).all(dim=1) & (points[fg] < 40).all(dim=1)
    assert int(inside_big.sum()) == 10 and (result.labels[0, fg][inside_big] == 0).all()
    tiny_point = int(np.flatnonzero((result.labels[0] == 1) & fg)[0])
    assert points[tiny_point].tolist() == [52.0, 52.0]  # the cell holding (50.5, 50.5)
    np.testing.assert_allclose(result.boxes[0, tiny_point].tolist(), tiny)
    # soft targets: each box's best point gets that box's best IoU, only its own class
    assert float(result.scores[0, fg & (result.labels[0] == 0), 0].max()) == pytest.approx(
        64 / 1024
    )
    assert float(result.scores[0, tiny_point, 1]) == pytest.approx(9 / 64)
    assert result.scores[0, tiny_point, 0] == 0 and result.scores[0, ~fg].abs().sum() == 0


# ---- metrics agree with pycocotools' COCOeval -------------------------------------------------


class _Replay(nn.Module):
    """Returns prepared predictions batch after batch (a model stand-in for evaluate)."""

    def __init__(self, predictions: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.predictions = predictions
        self.position = 0
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = self.predictions[self.position : self.position + len(images)]
        self.position += len(images)
        return out


def test_reported_map_matches_pycocotools_cocoeval(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    task = get_task("detection")
    bundle = task.build_data(SHAPES)
    truths = _all_targets(bundle.val)
    rng = np.random.default_rng(0)
    predictions = []
    for target in truths:  # jittered true boxes, some relabelled, plus false positives
        boxes = target["boxes"].numpy()
        noisy = boxes + rng.normal(0, 2.0, boxes.shape)
        labels = np.where(rng.random(len(boxes)) < 0.2, rng.integers(0, 3, len(boxes)), 0)
        labels = np.where(labels == 0, target["labels"].numpy(), labels)
        extra = rng.uniform(0, 48, (2, 2))
        noisy = np.concatenate([noisy, np.concatenate([extra, extra + 12], axis=1)])
        labels = np.concatenate([labels, rng.integers(0, 3, 2)])
        predictions.append(
            {
                "boxes": torch.tensor(noisy, dtype=torch.float32),
                "scores": torch.tensor(rng.uniform(0.05, 1, len(noisy)), dtype=torch.float32),
                "labels": torch.tensor(labels, dtype=torch.long),
            }
        )
    loader = DataLoader(bundle.val, batch_size=16, collate_fn=bundle.collate_fn)
    result = task.evaluate(
        _Replay(predictions), loader, device=torch.device("cpu"), class_names=bundle.class_names
    )

    # the same predictions as a COCO results JSON, scored by pycocotools itself
    images, annotations, results = [], [], []
    for image_id, (target, pred) in enumerate(zip(truths, predictions, strict=True), start=1):
        images.append({"id": image_id, "width": 64, "height": 64, "file_name": f"{image_id}.png"})
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for box, score, label in zip(
            pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(), strict=True
        ):
            bbox = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            results.append(
                {"image_id": image_id, "category_id": label, "bbox": bbox, "score": score}
            )
    categories = [{"id": i, "name": n} for i, n in enumerate(bundle.class_names)]
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    dt_path.write_text(json.dumps(results))
    coco_gt = COCO(str(gt_path))
    evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(dt_path)), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    stats = evaluator.stats  # [mAP, mAP50, mAP75, S, M, L, AR1, AR10, AR100, ...]
    assert 0.1 < stats[0] < 0.9  # a meaningful, non-trivial score
    assert result.metrics["map"] == pytest.approx(stats[0], abs=1e-3)
    assert result.metrics["map_50"] == pytest.approx(stats[1], abs=1e-3)
    assert result.metrics["map_75"] == pytest.approx(stats[2], abs=1e-3)
    assert result.metrics["mar_100"] == pytest.approx(stats[8], abs=1e-3)
    assert {f"ap/{n}" for n in bundle.class_names} <= set(result.metrics)
    assert set(result.figures) == {"pr_curves.png", "val_predictions.png"}


# ---- inference, pyfunc frame, ONNX ------------------------------------------------------------


def _trained_tiny() -> nn.Module:
    """A tiny detector after a few steps on shapes, so BN statistics and weights are real."""
    torch.manual_seed(0)
    task = get_task("detection")
    bundle = task.build_data(SHAPES)
    model = task.build_model(ModelConfig(arch="yolo_n", backbone="tiny"), num_classes=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = DataLoader(bundle.train, batch_size=16, shuffle=True, collate_fn=bundle.collate_fn)
    for batch in loader:
        loss = task.compute_loss(model, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    """Tolerance: 1e-3 pixels on decoded boxes, 1e-5 on probabilities (float32 kernels
    differ in summation order only); after NMS, the same detections."""
    import onnxruntime

    task = get_task("detection")
    model = _trained_tiny()
    card = task.model_card(
        ModelConfig(arch="yolo_n", backbone="tiny"), SHAPES, class_names=["c", "s", "t"]
    )
    path = export_onnx(task, model, card, tmp_path / "detector.onnx")
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        boxes, scores = model.decoded(images)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["fovea.card"])["class_names"] == ["c", "s", "t"]
    onnx_boxes, onnx_scores = session.run(None, {"images": images.numpy()})
    assert onnx_boxes.shape == (3, 64 + 16 + 4, 4) and onnx_scores.shape == (3, 84, 3)
    np.testing.assert_allclose(onnx_boxes, boxes.numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(onnx_scores, scores.numpy(), atol=1e-5, rtol=0)

    # NMS on the ONNX outputs reproduces Detector.detect
    detected = model.detect(images[:1], score_threshold=0.05)[0]
    flat = torch.from_numpy(onnx_scores[0]).flatten()
    keep = torch.nonzero(flat > 0.05).squeeze(1)
    point, label = keep // 3, keep % 3
    onnx_box = torch.from_numpy(onnx_boxes[0])[point]
    kept = batched_nms(onnx_box, flat[keep], label, 0.6)[:100]
    assert label[kept].tolist() == detected["labels"].tolist()
    torch.testing.assert_close(onnx_box[kept], detected["boxes"], atol=1e-3, rtol=0)


def test_predict_arrays_maps_boxes_back_to_the_input_image() -> None:
    from fovea.tasks.data.shapes import generate_shapes

    task = get_task("detection")
    model = _trained_tiny()
    card = task.model_card(
        ModelConfig(arch="yolo_n", backbone="tiny"), SHAPES, class_names=["c", "s", "t"]
    )
    card["score_threshold"] = 0.005  # a barely trained model: what matters is the geometry
    shapes = generate_shapes(count=4, size=128, seed=123)  # twice the training size
    images = shapes.images.permute(0, 2, 3, 1).numpy()  # [4, 128, 128, 3]
    out = task.predict_arrays(model, card, images)
    # the same as detecting on the 64 px squares (resized as serving does), boxes x2
    small = letterbox(shapes.images, 64, fill=card["pad_value"]).float()
    mean = torch.tensor(card["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(card["std"]).view(1, 3, 1, 1)
    direct = model.detect((small / 255 - mean) / std, score_threshold=0.005)
    for i in range(4):
        k = len(direct[i]["scores"])
        assert out["num_detections"][i] == k
        expected = direct[i]["boxes"].numpy() * 2  # [k, 4]; equal scores may swap places
        gaps = np.abs(out["boxes"][i, :k, None, :] - expected[None]).max(-1).min(-1)  # [k]
        assert gaps.max() < 1e-3
        assert sorted(out["labels"][i, :k]) == sorted(direct[i]["labels"].tolist())
    assert out["boxes"].shape[:2] == out["scores"].shape == out["labels"].shape
    assert out["boxes"].shape[0] == 4 and out["boxes"].dtype == np.float32
    counts = out["num_detections"]
    assert counts.sum() > 0
    for i, k in enumerate(counts):
        assert (out["labels"][i, k:] == -1).all() and (out["labels"][i, :k] >= 0).all()
        assert out["boxes"][i, :k].max() <= 128 and out["boxes"][i, :k].min() >= 0
    frame = detection_frame(out, card)
    assert list(frame.columns) == ["boxes", "scores", "labels", "class_names"]
    assert [len(b) for b in frame["boxes"]] == counts.tolist()
    assert all(set(names) <= {"c", "s", "t"} for names in frame["class_names"])


# ---- weights -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large"])
def test_torchvision_classifier_weights_load_into_the_backbone(
    backbone: str, tmp_path: Path
) -> None:
    import torchvision

    classifier = torchvision.models.get_model(backbone, weights=None)
    path = tmp_path / f"{backbone}.pt"
    torch.save(classifier.state_dict(), path)
    model = build_detector(arch="yolo_n", backbone=backbone, num_classes=2, weights=str(path))
    for name, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, classifier.state_dict()[name])


def test_detector_weights_fine_tune_to_new_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_detector(arch="yolo_n", backbone="tiny", num_classes=3)
    path = tmp_path / "detector.pt"
    torch.save(source.state_dict(), path)
    model = build_detector(arch="yolo_n", backbone="tiny", num_classes=5, weights=str(path))
    torch.testing.assert_close(model.neck.state_dict(), source.neck.state_dict())
    assert model.head.levels[0].cls_pred.out_channels == 5  # re-initialised for 5 classes
    with pytest.raises(UserError, match="does not fit"):
        build_detector(arch="yolo_s", backbone="tiny", num_classes=3, weights=str(path))
