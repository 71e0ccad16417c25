"""Drift: per model, the verdict over time, each test with its statistic and p-value, the
reference-vs-live histograms, the embedding test and the alarm thresholds."""

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
    _thresholds(body)


main()
