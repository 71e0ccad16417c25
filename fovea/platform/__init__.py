"""The control plane: HTTP API, job store, scheduler and schedules."""
