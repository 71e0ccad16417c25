"""The Streamlit dashboard: a client of the Fovea HTTP API (`fovea dashboard`)."""
