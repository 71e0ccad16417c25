"""Retraining: schedules that submit a training job from a template, and people's overrides.

Owns schedules and their event log (`service`), cron expressions in a time zone (`cron`),
firing due and drift-triggered schedules once per scheduler tick (`fires`), and promotion
or rollback by hand, audited in the model events (`manual`). Whether a candidate beats the
champion is decided in one place only, `fovea.tracking.gate`, for trained, retrained and
hand-promoted versions alike.
"""
