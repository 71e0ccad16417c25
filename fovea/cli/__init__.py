"""The `fovea` command. One module per command group, each registered here by name:

- `stack`: up, api, scheduler, dashboard (start parts of the stack)
- `jobs`: submit, jobs, status, cancel
- `models`: models, export, promote, rollback
- `monitoring`: predict, score, drift
- `schedules`: the `schedules` group
- `weights`: the `weights` group (works on the weights store's folder, not the API)
- `demo`: demo

Every command but those that start processes talks to the HTTP API (fovea.client).
"""

from __future__ import annotations

import typer

from fovea.cli import demo, jobs, models, monitoring, schedules, stack, weights

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fovea vision training platform")

COMMANDS = {
    "up": stack.up,
    "api": stack.api,
    "scheduler": stack.scheduler,
    "dashboard": stack.dashboard_command,
    "submit": jobs.submit,
    "jobs": jobs.jobs,
    "status": jobs.status,
    "cancel": jobs.cancel,
    "models": models.models,
    "export": models.export,
    "promote": models.promote,
    "rollback": models.rollback,
    "predict": monitoring.predict,
    "score": monitoring.score,
    "drift": monitoring.drift,
    "demo": demo.demo,
}
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)
app.add_typer(schedules.app, name="schedules")
app.add_typer(weights.app, name="weights")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
