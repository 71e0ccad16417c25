"""Models: registered models, versions and metrics, champion and challenger, the promotion
decisions with their reasons, and a "try it" upload drawn on the image."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw

from fovea.dashboard import common

MAX_GATE_JOBS = 10  # newest jobs of a model whose gate decisions are shown
PALETTE = np.array(  # class index -> RGB, for masks
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
    dtype=np.uint8,
)  # fmt: skip


def _models_table(items: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(
        [
            {
                "name": m["name"],
                "task": m["task"],
                "latest": m["latest_version"],
                "champion": m["champion_version"],
                "main metric": m["main_metric"],
                "champion score": m["champion_metric"],
                "updated": m["updated_at"],
            }
            for m in items
        ]
    )
    st.dataframe(frame, hide_index=True, width="stretch", height=min(38 + 35 * len(items), 320))


def challenger_of(model: dict[str, Any]) -> dict[str, Any] | None:
    """The version aliased `challenger`, else the newest version that is not champion."""
    versions = model["versions"]
    tagged = [v for v in versions if "challenger" in v["aliases"]]
    if tagged:
        return tagged[0]
    return next((v for v in versions if not v["is_champion"]), None)


def _champion(model: dict[str, Any]) -> None:
    versions = {v["version"]: v for v in model["versions"]}
    champion = versions.get(model["champion_version"])
    challenger = challenger_of(model)
    left, right = st.columns(2)
    if champion:
        score = champion["main_metric_value"]
        left.metric(
            "Champion",
            f"v{champion['version']}",
            help=f"{champion['main_metric']} = {score}",
        )
        shown = "-" if score is None else f"{score:.4g}"
        metric = champion["main_metric"]
        left.caption(f"Champion version: v{champion['version']} · {metric} {shown}")
    else:
        left.metric("Champion", "none")
    if challenger:
        delta = None
        if champion and None not in (
            challenger["main_metric_value"],
            champion["main_metric_value"],
        ):
            delta = f"{challenger['main_metric_value'] - champion['main_metric_value']:+.4g}"
        right.metric("Challenger", f"v{challenger['version']}", delta=delta)
        right.caption(f"decision: {challenger['champion_decision'] or '-'}")


def _versions(model: dict[str, Any]) -> None:
    frame = pd.DataFrame(
        [
            {
                "version": v["version"],
                "aliases": ", ".join(v["aliases"]),
                "created": v["created_at"],
                "main metric": v["main_metric"],
                "score": v["main_metric_value"],
                "decision": v["champion_decision"],
                "run": v["run_id"],
                **{f"m:{k}": val for k, val in list(v["metrics"].items())[:6]},
            }
            for v in model["versions"]
        ]
    )
    st.dataframe(frame, hide_index=True, width="stretch")


def _gate_rows(name: str) -> list[dict[str, Any]]:
    """The promotion gate's decision on each recent job that registered a version of `name`."""
    api = common.client()
    recent = common.call(api.jobs, limit=200)["items"]
    rows = []
    for summary in [j for j in recent if j["model_name"] == name][:MAX_GATE_JOBS]:
        decision = common.call(api.job, summary["id"]).get("promotion")
        if decision:
            rows.append(
                {
                    "at": summary["finished_at"],
                    "kind": "gate: promoted" if decision.get("promote") else "gate: kept",
                    "version": summary["model_version"],
                    "value": decision.get("candidate"),
                    "reason": "; ".join(str(r) for r in decision.get("reasons") or []),
                }
            )
    return rows


def _decisions(name: str) -> None:
    gate = _gate_rows(name)
    events = common.call(common.client().model_events, name)
    decisions = [e for e in events if e["kind"] != "drift_verdict"]
    st.markdown("**Promotion decisions and other events**")
    if not decisions and not gate:
        st.caption("No decisions recorded yet.")
        return
    frame = pd.DataFrame(
        gate
        + [
            {
                "at": e["at"],
                "kind": e["kind"],
                "version": e["model_version"],
                "value": e["value"],
                "reason": e["message"],
            }
            for e in reversed(decisions)
        ]
    )
    st.dataframe(frame, hide_index=True, width="stretch")


# -- try it ---------------------------------------------------------------------------------


def draw(image: Image.Image, prediction: dict[str, Any], task: str) -> Image.Image:
    """The model's answer drawn on the picture (boxes, a mask overlay, or a label)."""
    picture = image.convert("RGB")
    if task == "detection":
        pen = ImageDraw.Draw(picture)
        for box, score, label in zip(
            prediction["boxes"], prediction["scores"], prediction["class_names"], strict=False
        ):
            pen.rectangle(box, outline=(255, 40, 40), width=2)
            pen.text((box[0] + 2, box[1] + 2), f"{label} {score:.2f}", fill=(255, 255, 0))
    elif task == "segmentation" and prediction.get("mask_png"):
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(prediction["mask_png"]))))
        colours = PALETTE[mask % len(PALETTE)]
        overlay = Image.fromarray(colours).resize(picture.size, Image.Resampling.NEAREST)
        picture = Image.blend(picture, overlay, 0.45)
    elif "label" in prediction:
        pen = ImageDraw.Draw(picture)
        pen.rectangle((0, 0, picture.width, 14), fill=(0, 0, 0))
        pen.text((2, 1), f"{prediction['label']} {prediction['score']:.2f}", fill=(255, 255, 0))
    return picture


def _summary(prediction: dict[str, Any], task: str) -> None:
    if task == "classification":
        st.metric("Predicted", prediction["label"], help=f"score {prediction['score']:.3f}")
        st.bar_chart(pd.Series(prediction["probabilities"], name="probability"), height=180)
    elif task == "detection":
        st.metric("Detections", len(prediction["boxes"]))
    elif task == "segmentation":
        st.dataframe(
            pd.DataFrame(
                {"class": list(prediction["class_fractions"]),
                 "fraction": list(prediction["class_fractions"].values())}
            ),
            hide_index=True,
        )  # fmt: skip


def try_it(name: str, task: str | None) -> None:
    st.subheader("Try it")
    upload = st.file_uploader(
        "An image", type=["png", "jpg", "jpeg", "bmp", "webp"], key="try_file"
    )
    if upload is None:
        return
    data = upload.getvalue()
    answer, error = common.try_call(
        common.client().predict,
        name,
        [(upload.name or "image", data)],
        alias="champion",
        masks=task == "segmentation",
    )
    if error:
        st.error(common.explain(error))
        return
    prediction = answer["predictions"][0]
    if not prediction["ok"]:
        st.error(prediction["error"])
        return
    left, right = st.columns(2)
    drawn = draw(Image.open(io.BytesIO(data)), prediction, answer["task"])
    left.image(drawn, caption=f"v{answer['version']} ({', '.join(answer['aliases'])})")
    with right:
        _summary(prediction, answer["task"])


def main() -> None:
    st.title("Models")
    items = common.call(common.client().models)["items"]
    if not items:
        st.info("No registered models yet: a job with `register_as` registers one.")
        return
    _models_table(items)
    names = [m["name"] for m in items]
    wanted = st.query_params.get("model")
    name = st.selectbox(
        "Model", names, index=names.index(wanted) if wanted in names else 0, key="models_pick"
    )
    model = common.call(common.client().model, name)
    st.header(name)
    _champion(model)
    _versions(model)
    _decisions(name)
    try_it(name, model["task"])


main()
