"""The dashboard's entry script (`streamlit run fovea/dashboard/app.py`): one page per module
under views/, picked with st.navigation."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).with_name("views")
PAGES = [
    st.Page(VIEWS / "jobs.py", title="Jobs", icon=":material/list:", url_path="jobs", default=True),
    st.Page(VIEWS / "run.py", title="Job / run", icon=":material/monitoring:", url_path="run"),
    st.Page(
        VIEWS / "models.py", title="Models", icon=":material/model_training:", url_path="models"
    ),
    st.Page(VIEWS / "drift.py", title="Drift", icon=":material/query_stats:", url_path="drift"),
    st.Page(
        VIEWS / "schedules.py", title="Schedules", icon=":material/schedule:", url_path="schedules"
    ),
]

st.set_page_config(page_title="Fovea", layout="wide")
page = st.navigation(PAGES)
st.sidebar.caption("Fovea dashboard")
page.run()
