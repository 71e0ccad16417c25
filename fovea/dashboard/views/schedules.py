"""Schedules: each retraining schedule, its next fire, its last outcome, pause and resume."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from fovea.dashboard import common


def _trigger(s: dict[str, Any]) -> str:
    parts = []
    if s["cron"]:
        parts.append(f"{s['cron_description'] or s['cron']} ({s['timezone']})")
    if s.get("drift"):
        parts.append("on drift")
    return " and ".join(parts) or "-"


def _last_outcome(schedule_id: str) -> str:
    detail, error = common.try_call(common.client().schedule, schedule_id, events=1)
    if error is not None or not detail["events"]:
        return ""
    event = detail["events"][0]
    return f"{event['kind']}: {event['message']}"


def _table(items: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(
        [
            {
                "name": s["name"],
                "enabled": s["enabled"],
                "trigger": _trigger(s),
                "next fire": s["next_fire_at"] if s["enabled"] else "paused",
                "last fire": s["last_fire_at"],
                "last outcome": _last_outcome(s["id"]),
                "last job": s["last_job_id"],
                "overlap": s["overlap"],
            }
            for s in items
        ]
    )
    st.dataframe(frame, hide_index=True, width="stretch")


def _toggle(items: list[dict[str, Any]]) -> None:
    by_id = {s["id"]: s for s in items}
    schedule_id = st.selectbox(
        "Schedule", list(by_id), format_func=lambda i: by_id[i]["name"], key="schedules_pick"
    )
    chosen = by_id[schedule_id]
    label = "Pause" if chosen["enabled"] else "Resume"
    if st.button(label, key="schedules_toggle"):
        _, error = common.try_call(
            common.client().update_schedule, schedule_id, {"enabled": not chosen["enabled"]}
        )
        if error:
            st.error(common.explain(error))
        else:
            st.rerun()
    with st.expander("Events"):
        events = common.call(common.client().schedule_events, schedule_id, limit=50)
        frame = pd.DataFrame(
            [{"at": e["at"], "kind": e["kind"], "job": e["job_id"], "message": e["message"]}
             for e in events]
        )  # fmt: skip
        st.dataframe(frame, hide_index=True, width="stretch")


def main() -> None:
    st.title("Schedules")
    body, error = common.try_call(common.client().schedules)
    if error is not None and error.status == 404:
        st.info("This API has no schedules route (retraining not available).")
        return
    if error is not None:
        common.fail(error)
    assert body is not None
    items = body["items"]
    if not items:
        st.info("No schedules yet: `fovea schedules create <file>` adds one.")
        return
    _table(items)
    _toggle(items)


main()
