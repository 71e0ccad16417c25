"""Job / run: live progress and curves, events, final metrics, the run's pictures and tables,
and a comparison of runs (curves overlaid, parameter diff)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from fovea.dashboard import common

REFRESH_S = 2
NOT_QUALITY = ("lr", "seconds", "per_s", "gate/")  # other scales than the quality metrics
PICTURES = (  # allow-listed artifact names, in the order a reader wants them
    "training_curves.png",
    "confusion_matrix.png",
    "sample_predictions.png",
    "pr_curves.png",
    "val_predictions.png",
    "per_class_iou.png",
)


def _pick_job(recent: list[dict[str, Any]]) -> str | None:
    labels = {j["id"]: f"{j['name']} · {j['state']} · {j['id']}" for j in recent}
    wanted = st.query_params.get("job")
    if wanted and wanted not in labels:
        labels = {wanted: wanted, **labels}
    if not labels:
        st.info("No jobs yet: submit one on the Jobs page.")
        return None
    ids = list(labels)
    index = ids.index(wanted) if wanted in ids else 0
    job_id = st.selectbox("Job", ids, index=index, format_func=labels.__getitem__, key="run_job")
    if job_id != wanted:
        st.query_params["job"] = job_id
    return job_id


def curves_frame(metrics: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """{name: [{step, value}]} -> a frame indexed by step, one column per metric."""
    series = {
        name: pd.Series({p["step"]: p["value"] for p in points})
        for name, points in metrics.items()
        if points
    }
    frame = pd.DataFrame(series)
    frame.index.name = "step"
    return frame.sort_index()


def _split(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Loss-like curves and the rest (one scale each), skipping per-class and final values."""
    keep = [c for c in frame.columns if not c.startswith("final/") and c.count("/") <= 1]
    keep = [c for c in keep if not c.startswith(("ap/", "iou/", "recall/", "precision/"))]
    losses = [c for c in keep if "loss" in c]
    return losses, [c for c in keep if c not in losses]


def draw_curves(job_id: str) -> None:
    history = common.call(common.client().job_metrics, job_id)
    frame = curves_frame(history["metrics"])
    if frame.empty:
        st.caption("No curves yet: points appear once the first epochs are logged.")
        return
    losses, others = _split(frame)
    left, right = st.columns(2)
    if losses:
        left.markdown("**Loss**")
        left.line_chart(frame[losses], height=260)
    quality = [c for c in others if not any(w in c for w in NOT_QUALITY)]
    if quality:
        right.markdown("**Metrics**")
        right.line_chart(frame[quality], height=260)


def _header(job: dict[str, Any]) -> None:
    cols = st.columns(5)
    cols[0].metric("State", job["state"])
    cols[1].metric("Task", job["task"])
    cols[2].metric("Attempt", f"{job['attempt']}/{job['max_retries'] + 1}")
    cols[3].metric("Project", job["project"])
    model = f"{job['model_name']} v{job['model_version']}" if job["model_version"] else "-"
    cols[4].metric("Model", model)
    st.markdown(f"State: **{job['state']}**")
    if job["error"]:
        st.error(job["error"])


def live(job_id: str) -> None:
    """Progress and curves; as a fragment it re-runs alone every REFRESH_S seconds."""
    job = common.call(common.client().job, job_id)
    _header(job)
    fraction, text = common.progress_of(job)
    st.progress(fraction, text=f"{text} ({fraction:.0%})")
    draw_curves(job_id)
    if job["state"] in common.TERMINAL and st.session_state.get("run_was_live") == job_id:
        st.session_state["run_was_live"] = None
        st.rerun(scope="app")  # the run ended: show the final metrics and pictures


live_fragment = st.fragment(run_every=REFRESH_S)(live)


def _events(job: dict[str, Any]) -> None:
    events = job.get("events") or []
    with st.expander(f"Events ({len(events)})", expanded=job["state"] not in common.TERMINAL):
        frame = pd.DataFrame(
            [
                {
                    "at": e["at"],
                    "kind": e["kind"],
                    "to": e["to_state"] or "",
                    "message": e["message"],
                }
                for e in events
            ]
        )
        st.dataframe(frame, hide_index=True, width="stretch")


def _final(job: dict[str, Any]) -> None:
    metrics = job.get("metrics") or {}
    if not metrics:
        return
    st.subheader("Final metrics")
    main = [k for k in metrics if "/" not in k][:6]
    for col, key in zip(st.columns(max(len(main), 1)), main, strict=False):
        col.metric(key, f"{metrics[key]:.4g}")
    with st.expander("All metrics"):
        frame = pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())})
        st.dataframe(frame, hide_index=True, width="stretch")
    decision = job.get("promotion")
    if decision:
        verdict = "promoted to champion" if decision.get("promote") else "champion kept"
        reasons = "; ".join(str(r) for r in decision.get("reasons") or [])
        st.info(f"Promotion gate: {verdict}. {reasons}")


def _table(name: str, body: dict[str, Any]) -> None:
    names = body.get("class_names") or []
    if name == "confusion_matrix.json":
        st.markdown("**Confusion matrix** (rows: true class, columns: predicted)")
        st.dataframe(pd.DataFrame(body["matrix"], index=names, columns=names), width="stretch")
    elif name == "per_class_ap.json":
        st.markdown("**Average precision per class**")
        st.dataframe(pd.DataFrame({"class": names, "AP": body["ap"]}), hide_index=True)
    elif name == "per_class.json":
        st.markdown("**Per class**")
        frame = pd.DataFrame(
            {
                "class": names,
                "IoU": body["iou"],
                "true pixels": body["true_pixels"],
                "predicted pixels": body["predicted_pixels"],
            }
        )
        st.dataframe(frame, hide_index=True)


@st.cache_data(ttl=600, show_spinner=False, max_entries=200)
def _artifact(job_id: str, name: str) -> bytes | None:
    """An artifact of a finished job (they never change once it ended)."""
    data, error = common.try_call(common.client().job_artifact, job_id, name)
    return data if error is None else None


def pictures(job_id: str) -> None:
    listing = common.call(common.client().job_artifacts, job_id)
    names = [a["name"] for a in listing["items"]]
    if not names:
        st.caption("This run has no plots (yet).")
        return
    st.subheader("Pictures")
    shown = [n for n in PICTURES if n in names]
    for col, name in zip(st.columns(2) * len(shown), shown, strict=False):
        data = _artifact(job_id, name)
        if data is not None:
            col.image(data, caption=name, width="stretch")
    for name in ("confusion_matrix.json", "per_class_ap.json", "per_class.json"):
        if name in names:
            data = _artifact(job_id, name)
            if data is not None:
                _table(name, json.loads(data))


# -- compare --------------------------------------------------------------------------------


def compare(job_id: str, recent: list[dict[str, Any]]) -> None:
    st.subheader("Compare runs")
    others = {
        j["id"]: f"{j['name']} · {j['state']} · {j['id']}" for j in recent if j["id"] != job_id
    }
    chosen = st.multiselect(
        "Runs to compare with this one", list(others), format_func=others.__getitem__,
        key="run_compare",
    )  # fmt: skip
    if not chosen:
        return
    ids = [job_id, *chosen]
    jobs = {i: common.call(common.client().job, i) for i in ids}
    frames = {i: curves_frame(common.call(common.client().job_metrics, i)["metrics"]) for i in ids}
    keys = sorted({c for f in frames.values() for c in f.columns if not c.startswith("final/")})
    if keys:
        key = st.selectbox("Curve", keys, key="run_compare_key")
        overlay = pd.DataFrame(
            {f"{jobs[i]['name']} ({i[:8]})": frames[i][key] for i in ids if key in frames[i]}
        )
        st.line_chart(overlay, height=260)
    specs = {i: common.flatten(jobs[i]["spec"]) for i in ids}
    params = sorted({k for s in specs.values() for k in s})
    differ = [
        k for k in params if len({json.dumps(s.get(k), default=str) for s in specs.values()}) > 1
    ]
    st.markdown("**Parameters that differ**" if differ else "Same parameters.")
    if differ:
        frame = pd.DataFrame(
            {f"{jobs[i]['name']} ({i[:8]})": [str(specs[i].get(k)) for k in differ] for i in ids},
            index=differ,
        )
        st.dataframe(frame, width="stretch")


def main() -> None:
    st.title("Job / run")
    recent = common.call(common.client().jobs, limit=100)["items"]
    job_id = _pick_job(recent)
    if job_id is None:
        return
    job = common.call(common.client().job, job_id)
    if job["state"] in common.TERMINAL:
        live(job_id)
    else:
        st.session_state["run_was_live"] = job_id
        live_fragment(job_id)
    _events(job)
    if job["state"] in common.TERMINAL:
        _final(job)
        pictures(job_id)
    compare(job_id, recent)


main()
