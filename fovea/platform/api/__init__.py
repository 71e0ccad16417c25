"""HTTP API (FastAPI): one router per resource, bearer-token auth on every route but /health."""
