"""Jobs: what a training job is and how the control plane carries it to its end.

Owns the JobSpec and its submit-time validation (`spec`, `validation`), the job service
that alone writes jobs and their events, claims and queue reports (`service`), the failure
policy that maps each way an attempt ends to a state (`policy`), the scheduler loop that
admits, dispatches, retries and reconciles jobs on Ray (`scheduler`), and closing the MLflow
runs of attempts that ended badly (`closing`).
"""
