"""HTTP API (FastAPI): one router per resource (jobs, runs, models, predict, drift, schedules),
every body in `schemas`, every error in one body (`http_errors`), bearer-token auth on every
route but /health, admission control in front (`admission`)."""
