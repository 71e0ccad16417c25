"""Jobs: a live table with filters, the submit form, cancel, and why a queued job waits."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
import yaml

from fovea.client import ApiError
from fovea.dashboard import common

PAGE_SIZES = (25, 50, 100, 200)
REFRESH_S = 3


def _filters() -> dict[str, Any]:
    left, middle, right, far = st.columns([2, 2, 1, 1])
    state = left.selectbox("State", ["all", *common.STATES], key="jobs_state")
    project = middle.text_input("Project", key="jobs_project", max_chars=100).strip()
    size = right.selectbox("Rows", PAGE_SIZES, index=1, key="jobs_rows")
    page = far.number_input("Page", min_value=1, value=1, step=1, key="jobs_page")
    return {
        "state": None if state == "all" else state,
        "project": project or None,
        "limit": size,
        "offset": (int(page) - 1) * size,
    }


def _rows(items: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for job in items:
        fraction, text = common.progress_of(job)
        rows.append(
            {
                "id": job["id"],
                "name": job["name"],
                "state": job["state"],
                "task": job["task"],
                "project": job["project"],
                "priority": job["priority"],
                "progress": fraction,
                "detail": text if job["state"] != "failed" else (job["error"] or "")[:120],
                "attempt": f"{job['attempt']}/{job['max_retries'] + 1}",
                "age": common.age(job["submitted_at"]),
                "model": (
                    f"{job['model_name']} v{job['model_version']}" if job["model_version"] else ""
                ),
            }
        )
    return pd.DataFrame(rows)


@st.fragment(run_every=REFRESH_S)
def live_table(filters: dict[str, Any]) -> None:
    page = common.call(common.client().jobs, **filters)
    st.session_state["jobs_on_page"] = [
        (j["id"], j["name"], j["state"], j["priority"]) for j in page["items"]
    ]
    shown = f"{filters['offset'] + 1}-{filters['offset'] + len(page['items'])}"
    st.caption(f"{page['total']} jobs; showing {shown if page['items'] else 'none'}")
    if not page["items"]:
        st.info("No jobs match. Submit one below.")
        return
    st.dataframe(
        _rows(page["items"]),
        hide_index=True,
        width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1),
            "id": st.column_config.TextColumn("id", width="small"),
        },
        key="jobs_table",
    )


@st.cache_data(ttl=300, show_spinner=False)
def _catalog(url: str) -> dict[str, Any]:
    """GET /catalog, kept five minutes: what the form offers is what the API accepts."""
    return common.call(common.client().catalog)["tasks"]


def _why_waiting(job_id: str) -> None:
    """GET /jobs/{id}/queue, in words and the jobs that go first."""
    got, error = common.try_call(common.client().job_queue, job_id)
    if error is not None:
        st.warning(common.explain(error))
        return
    assert got is not None
    if got["position"] is None:
        st.info(got["reasons"][0])
        return
    st.markdown(
        f"**Why it waits**: number {got['position']} in line of {got['queued']} queued jobs."
    )
    for reason in got["reasons"]:
        st.markdown(f"- {reason}")
    if got["ahead"]:
        st.caption("First in line before it")
        st.dataframe(
            pd.DataFrame(
                [
                    {"id": j["id"], "name": j["name"], "priority": j["priority"],
                     "project": j["project"], "age": common.age(j["submitted_at"])}
                    for j in got["ahead"]
                ]
            ),
            hide_index=True,
            width="stretch",
        )  # fmt: skip


def actions() -> None:
    on_page = st.session_state.get("jobs_on_page") or []
    if not on_page:
        return
    labels = {jid: f"{name} · {state} · {jid}" for jid, name, state, _ in on_page}
    job_id = st.selectbox("Job", list(labels), format_func=labels.__getitem__, key="jobs_pick")
    open_col, cancel_col, _ = st.columns([1, 1, 4])
    if open_col.button("Open run", key="jobs_open"):
        st.switch_page("views/run.py", query_params={"job": job_id})
    state = next(s for jid, _, s, _ in on_page if jid == job_id)
    if cancel_col.button("Cancel", key="jobs_cancel", disabled=state in common.TERMINAL):
        _, error = common.try_call(common.client().cancel, job_id)
        if error:
            st.error(common.explain(error))
        else:
            st.success(f"Cancel requested for {job_id}.")
    if state == "queued":
        _why_waiting(job_id)


# -- submit ---------------------------------------------------------------------------------


def _field_error(path: str) -> None:
    problem = (st.session_state.get("submit_errors") or {}).get(path)
    if problem:
        st.error(problem)


def _builtin_for_task(catalog: dict[str, Any]) -> None:
    """A builtin dataset of the old task that the new one cannot use gives way to one it can
    (digits is classification's, shapes detection's and segmentation's)."""
    uri = st.session_state.get("f_uri", "")
    fitting = catalog[st.session_state["f_task"]]["builtin_datasets"]
    if uri.startswith("builtin://") and uri.split("?")[0] not in fitting and fitting:
        st.session_state["f_uri"] = fitting[0]


def _form() -> dict[str, Any]:
    """The spec the widgets describe; a validation error shows under its field."""
    left, right = st.columns(2)
    with left:
        catalog = _catalog(common.api_url())
        task = st.selectbox(
            "Task", list(catalog), key="f_task", on_change=_builtin_for_task, args=(catalog,)
        )
        _field_error("task")
        info = catalog[task]
        name = st.text_input("Name", value=f"{task}-job", key="f_name", max_chars=100)
        _field_error("name")
        uri = st.text_input("Dataset", value="builtin://digits", key="f_uri", max_chars=4096)
        _field_error("dataset.uri")
        fmt = st.selectbox("Format", info["formats"], key="f_format")
        _field_error("dataset.format")
        arch = st.selectbox("Architecture", info["architectures"], key="f_arch")
        _field_error("model.arch")
        backbone = None
        if info["backbones"]:
            backbone = st.selectbox(
                "Backbone",
                info["backbones"],
                index=info["backbones"].index(info["presets"][arch]["default_backbone"]),
                key="f_backbone",
            )
            _field_error("model.backbone")
        register = st.text_input("Register as (model name, optional)", key="f_register")
        _field_error("register_as")
    with right:
        epochs = st.number_input("Epochs", min_value=1, value=1, key="f_epochs")
        _field_error("train.epochs")
        batch = st.number_input("Batch size", min_value=1, value=64, key="f_batch")
        _field_error("train.batch_size")
        lr = st.number_input("Learning rate", min_value=0.0, value=0.003, format="%g", key="f_lr")
        _field_error("train.lr")
        size = st.number_input("Image size", min_value=8, value=32, step=8, key="f_size")
        _field_error("train.image_size")
        priority = st.number_input("Priority", value=0, step=1, key="f_priority")
        _field_error("priority")
        project = st.text_input("Project", value="default", key="f_project", max_chars=100)
        _field_error("project")
    spec: dict[str, Any] = {
        "name": name,
        "task": task,
        "project": project,
        "priority": int(priority),
        "dataset": {"uri": uri, "format": fmt, "val_split": 0.2},
        "model": {"arch": arch, **({"backbone": backbone} if backbone else {})},
        "train": {
            "epochs": int(epochs),
            "batch_size": int(batch),
            "lr": float(lr),
            "image_size": int(size),
        },
        "resources": {"cpus": 1},
    }
    if register.strip():
        spec["register_as"] = register.strip()
    return spec


def submit_form() -> None:
    st.subheader("Submit a job")
    spec = _form()
    with st.expander("Spec (YAML)"):
        st.code(yaml.safe_dump(spec, sort_keys=False), language="yaml")
    if st.button("Submit", type="primary", key="f_submit"):
        try:
            job = common.client().submit(spec)
        except ApiError as exc:
            if exc.status != 422:
                common.fail(exc)
            detail = exc.body.get("detail", []) if isinstance(exc.body, dict) else []
            st.session_state["submit_errors"] = {d["field"]: d["problem"] for d in detail}
            st.session_state["submit_message"] = ("error", common.explain(exc))
        else:
            st.session_state["submit_errors"] = {}
            st.session_state["submit_message"] = ("ok", f"Submitted job {job['id']}.")
            st.session_state["submitted_job"] = job["id"]
        st.rerun()
    kind, text = st.session_state.get("submit_message") or (None, "")
    if kind == "ok":
        st.success(text)
        st.page_link(
            "views/run.py",
            label="Follow it on the run page",
            query_params={"job": st.session_state["submitted_job"]},
        )
    elif kind == "error":
        st.error(text)


def main() -> None:
    st.title("Jobs")
    filters = _filters()
    live_table(filters)
    actions()
    st.divider()
    submit_form()


main()
