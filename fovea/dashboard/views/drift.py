"""Drift: per model, the verdict over time, each test with its statistic and p-value, the
reference-vs-live histograms, the embedding test, the alarm thresholds, and example live
images of a drifting window (the copies prediction_sample_rate keeps)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from fovea.dashboard import common

VERDICT_LEVEL = {"insufficient": -1, "ok": 0, "warning": 1, "drift": 2}


def _history(reports: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(
        [
            {
                "at": common.parse_time(r["created_at"]),
                "report": r["id"],
                "version": r["version"],
                "verdict": r["verdict"],
                "window": r["window_verdict"],
                "level": VERDICT_LEVEL.get(r["verdict"], -1),
                "live images": r["n_live"],
                "trigger": r["trigger"],
                "reasons": "; ".join(r["reasons"] or []),
            }
            for r in reports
        ]
    )
    st.markdown("**Verdict over time** (-1 insufficient, 0 ok, 1 warning, 2 drift)")
    st.scatter_chart(frame, x="at", y="level", color="verdict", height=220)
    st.dataframe(frame.drop(columns=["level"]), hide_index=True, width="stretch")


def _tests(latest: dict[str, Any]) -> None:
    rows = [
        {
            "test": t["name"],
            "family": t["family"],
            "method": t["method"],
            "statistic": t["statistic"],
            "effect size": t["effect_size"],
            "p-value": t["p_value"],
            "significant": t["significant"],
        }
        for t in latest.get("tests") or []
    ]
    if rows:
        st.markdown("**Tests of the latest report**")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    mmd = [t for t in latest.get("tests") or [] if t["family"] == "embedding_mmd"]
    if mmd:
        t = mmd[0]
        st.caption(
            f"Embedding test (MMD, permutations): statistic {t['statistic']:.4g}, "
            f"p = {t['p_value']}, {'significant' if t['significant'] else 'not significant'}"
        )


def _plots(name: str, latest: dict[str, Any]) -> None:
    api = common.client()
    left, right = st.columns([3, 2])
    for col, plot in ((left, "histograms.png"), (right, "mmd.png")):
        data, error = common.try_call(api.drift_plot, name, latest["id"], plot)
        if error is None:
            col.image(data, caption=plot, width="stretch")
        else:
            col.caption(f"{plot}: {common.explain(error)}")


EXAMPLES = 8


def _summary_text(summary: dict[str, Any]) -> str:
    parts = []
    for key, value in (summary or {}).items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.3g}")
        elif isinstance(value, (int, str)):
            parts.append(f"{key} {value}")
    return ", ".join(parts)[:120]


def _examples(name: str, reports: list[dict[str, Any]]) -> None:
    """Live images of one report's window: by default the newest that drifted or warned."""
    windows = [r for r in reports if r.get("first_prediction_id")]
    if not windows:
        return
    flagged = [r for r in windows if r["verdict"] in ("drift", "warning")]
    default = flagged[0] if flagged else windows[0]
    labels = {
        r["id"]: f"report {r['id']} · {r['verdict']} · {r['created_at'][:19]}" for r in windows
    }
    st.markdown("**Live images of a window**")
    chosen = st.selectbox(
        "Window of",
        list(labels),
        index=list(labels).index(default["id"]),
        format_func=labels.__getitem__,
        key="drift_window",
    )
    report = next(r for r in windows if r["id"] == chosen)
    got, error = common.try_call(
        common.client().predictions,
        name,
        limit=EXAMPLES,
        from_id=report["first_prediction_id"],
        before_id=report["last_prediction_id"] + 1,
        sampled=True,
    )
    if error is not None:
        st.caption(f"Live images: {common.explain(error)}")
        return
    assert got is not None
    items = got["items"]
    if not items:
        st.caption(
            f"No image of report {chosen}'s window was kept: the API keeps a share "
            "prediction_sample_rate (FOVEA_PREDICTION_SAMPLE_RATE) of live images, 0 by default."
        )
        return
    columns = st.columns(4)
    for i, item in enumerate(items):
        data, failed = common.try_call(common.client().prediction_image, name, item["id"])
        col = columns[i % 4]
        if failed is not None:
            col.caption(f"{item['file']}: {common.explain(failed)}")
            continue
        col.image(data, caption=f"{item['file']} · {_summary_text(item['summary'])}")
    st.caption(
        f"{len(items)} newest kept images of predictions {report['first_prediction_id']}"
        f"-{report['last_prediction_id']} (report {chosen}, {report['verdict']})."
    )


def _thresholds(body: dict[str, Any]) -> None:
    with st.expander("Alarm thresholds and settings"):
        frame = pd.DataFrame(
            {
                "setting": list(body["thresholds"]),
                "value": [str(v) for v in body["thresholds"].values()],
            }
        )
        st.dataframe(frame, hide_index=True)
        interval = body.get("interval_s")
        st.caption(
            f"Scheduled reports every {interval:g} s." if interval else "Reports on request only."
        )


def main() -> None:
    st.title("Drift")
    items = common.call(common.client().models)["items"]
    if not items:
        st.info("No registered models yet, so no drift to show.")
        return
    names = [m["name"] for m in items]
    name = st.selectbox("Model", names, key="drift_model")
    body, error = common.try_call(common.client().drift, name)
    if error is not None and error.status == 404:
        st.info("This API has no drift route for the model (monitoring not available).")
        return
    if error is not None:
        common.fail(error)
    assert body is not None
    if st.button("Compute a report now", key="drift_now"):
        _, failed = common.try_call(common.client().compute_drift, name)
        if failed:
            st.warning(common.explain(failed))
        else:
            st.rerun()
    latest = body["latest"]
    if latest is None:
        st.info(
            "No drift reports for this model yet: reports need predictions in the log "
            "(POST /models/{name}/predict) and run on a schedule or on request."
        )
        _thresholds(body)
        return
    st.metric("Latest verdict", latest["verdict"], help="; ".join(latest["reasons"] or []))
    _history(body["history"])
    _tests(latest)
    _plots(name, latest)
    _examples(name, body["history"])
    _thresholds(body)


main()
