"""The control plane, one package per concern:

- `jobs/`: the JobSpec and its validation, the job service, claims and queue reports, the
  failure policy, the scheduler loop, closing the runs of failed attempts;
- `monitoring/`: serving (alias -> version, replicas on Ray), the prediction log, drift
  statistics, reports and plots, the monitor, batch scoring;
- `retraining/`: schedules, cron, fires, promotion and rollback by hand;
- `api/`: the FastAPI app, one router per resource, its schemas and error bodies;
- `store/`: the SQL tables and Alembic migrations.

What all of them share stays here: `errors` (the control plane's error types), `wake`
(waking the scheduler when there is work), `model_events` (the append-only log of model
events), `server` (the processes: `fovea up`, `fovea api`, `fovea scheduler`).
"""
