"""The decoupled, anchor-free head, its box coder, target assignment and decoding.

Per pyramid level: a 1x1 stem, then a classification branch and a box branch (each `convs`
3x3 conv-BN-SiLU layers and a 1x1 prediction). Every cell is a point at its centre; the
box branch predicts the distances from that point to the four box sides in stride units
(softplus keeps them positive), `LtrbCoder` turns them into xyxy pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import batched_nms

from fovea.tasks.backbones import SILU, conv_bn_act
from fovea.tasks.detection.assigner import task_aligned_assign
from fovea.tasks.detection.loss import check_loss_weights, detection_loss

PRIOR_PROBABILITY = 0.01  # initial class probability (RetinaNet): a calm start for BCE


class LtrbCoder:
    """Point + (left, top, right, bottom) distances in stride units <-> xyxy pixel boxes
    (torchvision's BoxLinearCoder with each cell's stride as the normaliser)."""

    @staticmethod
    def decode(
        points: torch.Tensor, strides: torch.Tensor, distances: torch.Tensor
    ) -> torch.Tensor:
        """points [P, 2], strides [P], distances [..., P, 4] -> boxes [..., P, 4]."""
        scaled = distances * strides[:, None]
        return torch.cat([points - scaled[..., :2], points + scaled[..., 2:]], dim=-1)

    @staticmethod
    def encode(points: torch.Tensor, strides: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The inverse of decode: boxes [..., P, 4] -> distances [..., P, 4]."""
        distances = torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)
        return distances / strides[:, None]


class LevelHead(nn.Module):
    def __init__(self, *, channels: int, num_classes: int, convs: int) -> None:
        super().__init__()
        self.stem = conv_bn_act(channels, channels, kernel=1, activation=SILU)
        self.cls_branch = nn.Sequential(
            *(conv_bn_act(channels, channels, activation=SILU) for _ in range(convs))
        )
        self.box_branch = nn.Sequential(
            *(conv_bn_act(channels, channels, activation=SILU) for _ in range(convs))
        )
        self.cls_pred = nn.Conv2d(channels, num_classes, 1)
        self.box_pred = nn.Conv2d(channels, 4, 1)
        nn.init.constant_(
            self.cls_pred.bias, -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        )
        nn.init.normal_(self.box_pred.weight, std=0.01)
        nn.init.zeros_(self.box_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        cls_logits = self.cls_pred(self.cls_branch(x))  # [N, C, h, w]
        box_regression = self.box_pred(self.box_branch(x))  # [N, 4, h, w]
        return cls_logits, box_regression


class DetectionHead(nn.Module):
    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        strides: Sequence[int],
        convs: int,
        loss_weights: Mapping[str, float] | None = None,
        score_threshold: float = 0.001,  # low for mAP; serving passes its own
        iou_threshold: float = 0.6,
        max_detections: int = 100,
        pre_nms_top_k: int = 1000,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.levels = nn.ModuleList(
            LevelHead(channels=in_channels, num_classes=num_classes, convs=convs)
            for _ in self.strides
        )
        self.loss_weights = check_loss_weights(loss_weights)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self.pre_nms_top_k = pre_nms_top_k

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Three maps [N, c, h_l, w_l] -> every cell of every level, flattened:
        cls_logits [N, P, C], box_regression [N, P, 4] (raw), points [P, 2], strides [P]."""
        cls_all, box_all, points, strides = [], [], [], []
        for level, x, stride in zip(self.levels, features, self.strides, strict=True):
            cls_logits, box_regression = level(x)
            h, w = cls_logits.shape[-2:]
            cls_all.append(cls_logits.flatten(2).transpose(1, 2))  # [N, h*w, C]
            box_all.append(box_regression.flatten(2).transpose(1, 2))  # [N, h*w, 4]
            ys = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) * stride
            xs = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) * stride
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1))  # [h*w, 2]
            strides.append(torch.full((h * w,), float(stride), device=x.device))
        return {
            "cls_logits": torch.cat(cls_all, dim=1),
            "box_regression": torch.cat(box_all, dim=1),
            "points": torch.cat(points),
            "strides": torch.cat(strides),
        }

    def decode(
        self, outputs: Mapping[str, torch.Tensor], *, image_size: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> boxes [N, P, 4] xyxy pixels clipped to the image, scores [N, P, C] in [0, 1]."""
        distances = F.softplus(outputs["box_regression"].float())
        boxes = LtrbCoder.decode(outputs["points"], outputs["strides"], distances)
        height, width = int(image_size[0]), int(image_size[1])
        limits = torch.tensor([width, height, width, height], device=boxes.device)
        boxes = torch.minimum(boxes.clamp(min=0), limits.to(boxes.dtype))
        return boxes, outputs["cls_logits"].float().sigmoid()

    def compute_loss(
        self,
        outputs: Mapping[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
        *,
        image_size: Sequence[int],
    ) -> dict[str, torch.Tensor]:
        """targets: per image {"boxes" [K, 4] xyxy pixels, "labels" [K]} ->
        {"loss", "loss_cls", "loss_box"}."""
        distances = F.softplus(outputs["box_regression"].float())
        pred_boxes = LtrbCoder.decode(outputs["points"], outputs["strides"], distances)
        gt_boxes, gt_labels = _pad_targets(targets, device=pred_boxes.device)
        assignment = task_aligned_assign(
            pred_scores=outputs["cls_logits"].detach().float().sigmoid(),
            pred_boxes=pred_boxes.detach(),
            points=outputs["points"],
            strides=outputs["strides"],
            gt_boxes=gt_boxes,
            gt_labels=gt_labels,
        )
        return detection_loss(
            cls_logits=outputs["cls_logits"],
            pred_boxes=pred_boxes,
            assignment=assignment,
            weights=self.loss_weights,
        )

    @torch.no_grad()
    def postprocess(
        self,
        outputs: Mapping[str, torch.Tensor],
        *,
        image_size: Sequence[int],
        score_threshold: float | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: top pre_nms_top_k (point, class) pairs above the threshold, class-wise
        NMS, at most max_detections, best first."""
        threshold = self.score_threshold if score_threshold is None else score_threshold
        all_boxes, all_scores = self.decode(outputs, image_size=image_size)
        results = []
        for boxes, scores in zip(all_boxes, all_scores, strict=True):  # [P, 4], [P, C]
            flat = scores.flatten()  # [P * C], index = point * C + class
            keep = torch.nonzero(flat > threshold).squeeze(1)
            if len(keep) > self.pre_nms_top_k:
                keep = keep[flat[keep].topk(self.pre_nms_top_k).indices]
            point, label = keep // self.num_classes, keep % self.num_classes
            chosen_boxes, chosen_scores = boxes[point], flat[keep]
            kept = batched_nms(chosen_boxes, chosen_scores, label, self.iou_threshold)
            kept = kept[: self.max_detections]  # batched_nms sorts by score
            results.append(
                {"boxes": chosen_boxes[kept], "scores": chosen_scores[kept], "labels": label[kept]}
            )
        return results


def _pad_targets(
    targets: list[dict[str, torch.Tensor]], *, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image targets -> boxes [B, M, 4] (zeros), labels [B, M] (-1 where padding)."""
    most = max((len(t["labels"]) for t in targets), default=0)
    boxes = torch.zeros((len(targets), most, 4), device=device)
    labels = torch.full((len(targets), most), -1, dtype=torch.long, device=device)
    for i, target in enumerate(targets):
        count = len(target["labels"])
        boxes[i, :count] = target["boxes"].to(device=device, dtype=torch.float32)
        labels[i, :count] = target["labels"].to(device)
    return boxes, labels
