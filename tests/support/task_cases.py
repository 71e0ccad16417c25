"""Cases shared by the task tests."""

from __future__ import annotations

from fovea.tasks import DataConfig, ModelConfig

# the cheapest real configuration of each task; a new task must add its own here
TINY = {
    "classification": (
        DataConfig(uri="builtin://digits", format="builtin", image_size=16),
        ModelConfig(arch="smallcnn"),
    ),
    "detection": (
        DataConfig(uri="builtin://shapes?n=200", format="builtin", image_size=64),
        ModelConfig(arch="yolo_n", backbone="tiny"),
    ),
    "segmentation": (
        DataConfig(uri="builtin://shapes?n=200", format="builtin", image_size=32),
        ModelConfig(arch="unet", backbone="tiny"),
    ),
}
