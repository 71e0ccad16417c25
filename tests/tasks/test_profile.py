"""Profiles: one forward for answers and embeddings, the same numbers at training end and
when serving, statistics that move the way the pictures do, a reference that round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from fovea.tasks import get_task
from fovea.tasks.profile import (
    image_statistics,
    profile_image_list,
    profile_images,
    reference_images,
    reference_profile,
)
from fovea.tasks.reference import STATISTICS, Reference
from tests.support.task_cases import TINY


def trained_like(name: str):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    task = get_task(name)
    data_config, model_config = TINY[name]
    bundle = task.build_data(data_config)
    model = task.build_model(model_config, num_classes=len(bundle.class_names)).eval()
    card = json.loads(
        json.dumps(task.model_card(model_config, data_config, class_names=bundle.class_names))
    )
    return task, model, card, bundle, data_config


@pytest.mark.parametrize("name", sorted(TINY))
def test_profile_answers_as_predict_and_embeds_in_the_same_pass(name: str) -> None:
    task, model, card, bundle, _ = trained_like(name)
    images = bundle.val.data.images[:6].permute(0, 2, 3, 1).numpy()
    calls = []
    site = task.embedding_site(model, card).module
    handle = site.register_forward_hook(lambda *_: calls.append(1))
    profile = profile_images(task, model, card, images)
    handle.remove()
    assert len(calls) == 1  # answers and embeddings from one forward
    direct = task.predict_arrays(model, card, images)
    for i, outputs in enumerate(profile.outputs):
        for key in direct:
            np.testing.assert_array_equal(outputs[key], direct[key][i])
    assert profile.embeddings.shape[0] == 6 and profile.embeddings.shape[1] >= 16
    assert np.isfinite(profile.embeddings).all() and profile.embeddings.std() > 0
    assert set(profile.stats) == set(STATISTICS) and len(profile.summary) == 6


def test_classification_embedding_is_what_the_head_sees() -> None:
    task, model, card, bundle, _ = trained_like("classification")
    images = bundle.val.data.images[:4].permute(0, 2, 3, 1).numpy()
    profile = profile_images(task, model, card, images)
    from fovea.tasks.preprocess import Preprocess

    x = Preprocess.from_card(card)(torch.from_numpy(images).permute(0, 3, 1, 2))
    with torch.no_grad():
        features = model.pool(model.features(x)).flatten(1)  # SmallCNN before its head
    np.testing.assert_allclose(profile.embeddings, features.numpy(), rtol=1e-5, atol=1e-6)


def test_training_end_and_serving_profile_the_same_image_alike() -> None:
    task, model, card, bundle, data_config = trained_like("segmentation")
    images = reference_images(data_config, bundle, limit=10)
    reference = reference_profile(task, card, model.state_dict(), images)
    # serving sees the same pictures one at a time, in another order
    live = profile_image_list(task, model, card, images[::-1])
    projected = reference.project(live.embeddings)[::-1]
    np.testing.assert_allclose(projected, reference.embeddings, rtol=1e-4, atol=1e-4)
    for name in STATISTICS:
        np.testing.assert_allclose(live.stats[name][::-1], reference.stats[name], rtol=1e-6)
    assert live.summary[::-1] == reference.summary
    again = Reference.from_npz(reference.to_npz())
    np.testing.assert_array_equal(again.embeddings, reference.embeddings)
    assert again.meta["task"] == "segmentation" and again.meta["count"] == 10
    assert 0 < again.explained_variance <= 1


def test_statistics_follow_blur_darkness_size_and_padding() -> None:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    variants = {
        "plain": photo,
        "blurred": photo.filter(ImageFilter.GaussianBlur(2)),
        "dark": Image.fromarray((np.asarray(photo) * 0.6).astype(np.uint8)),
    }

    def stats(image: Image.Image) -> dict[str, float]:
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
        values = image_statistics(pixels, height=48, width=64, content=(48, 64))
        return {k: float(v[0]) for k, v in values.items()}

    plain, blurred, dark = (stats(v) for v in variants.values())
    assert blurred["sharpness"] < 0.2 * plain["sharpness"]
    assert dark["brightness"] == pytest.approx(0.6 * plain["brightness"], rel=0.02)
    assert (plain["width"], plain["height"], plain["aspect"]) == (64, 48, pytest.approx(4 / 3))
    # a letterboxed square: the padding (the bottom 16 rows) is left out
    padded = torch.zeros((1, 3, 64, 64), dtype=torch.uint8)
    padded[..., :48, :] = torch.from_numpy(np.array(photo)).permute(2, 0, 1)
    inside = image_statistics(padded, height=48, width=64, content=(48, 64))
    assert float(inside["brightness"][0]) == pytest.approx(plain["brightness"], rel=1e-6)
