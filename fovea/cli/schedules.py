"""`fovea schedules ...`: cron and drift-triggered retraining from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fovea.cli.terminal import client_for, console, fail, load_mapping
from fovea.client import ApiError

app = typer.Typer(no_args_is_help=True, help="Cron and drift-triggered retraining")


def _print_schedule(s: dict[str, Any]) -> None:
    state = "[green]enabled[/green]" if s["enabled"] else "[yellow]paused[/yellow]"
    console.print(f"schedule [bold]{s['name']}[/bold] ({s['id']}): {state}")
    if s["cron"]:
        console.print(f"  cron      {s['cron']}  ({s['cron_description']}, {s['timezone']})")
    if s["drift"]:
        d = s["drift"]
        console.print(
            f"  drift     of {d['model']}: cooldown {d['cooldown_hours']:g} h, "
            f"at most {d['max_per_day']} a day"
        )
    console.print(
        f"  overlap   {s['overlap']}; misfire grace {s['misfire_grace_s']} s; "
        f"skip if data unchanged: {s['skip_if_data_unchanged']}"
    )
    console.print(f"  next fire {s['next_fire_at'] or '-'}   last job {s['last_job_id'] or '-'}")
    for e in reversed(s.get("events") or []):
        console.print(f"  {e['at'][:19]} {e['kind']:<8} {e['message']}")


@app.command("list")
def schedules_list(url: Annotated[str | None, typer.Option()] = None) -> None:
    """List schedules with their next fire time."""
    try:
        items = client_for(url).schedules()["items"]
    except ApiError as exc:
        fail(str(exc))
    table = Table("id", "name", "cron", "timezone", "drift of", "state", "overlap", "next fire")
    for s in items:
        table.add_row(
            s["id"],
            s["name"],
            s["cron"] or "",
            s["timezone"],
            (s["drift"] or {}).get("model") or "",
            "enabled" if s["enabled"] else "paused",
            s["overlap"],
            s["next_fire_at"] or "",
        )
    console.print(table)


@app.command("create")
def schedules_create(
    spec_file: Annotated[Path, typer.Argument(help="schedule YAML/JSON; `template` may be a path")],
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create a schedule (name, template, cron, timezone, overlap, drift, ...)."""
    body = load_mapping(spec_file, "schedule")
    if isinstance(body.get("template"), str):  # a job spec file, relative to this file
        body["template"] = load_mapping(spec_file.parent / body["template"], "job spec")
    try:
        created = client_for(url).create_schedule(body)
    except ApiError as exc:
        fail(str(exc))
    _print_schedule(created)


@app.command("show")
def schedules_show(
    schedule: Annotated[str, typer.Argument(help="id or name")],
    events: Annotated[int, typer.Option(help="newest events to show")] = 20,
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """A schedule with its newest fires, skips and misfires."""
    try:
        _print_schedule(client_for(url).schedule(schedule, events=events))
    except ApiError as exc:
        fail(str(exc))


@app.command("update")
def schedules_update(
    schedule: Annotated[str, typer.Argument(help="id or name")],
    cron: Annotated[str | None, typer.Option(help="new cron expression")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA time zone")] = None,
    overlap: Annotated[str | None, typer.Option(help="forbid | queue | replace")] = None,
    misfire_grace_s: Annotated[int | None, typer.Option()] = None,
    skip_if_data_unchanged: Annotated[bool | None, typer.Option()] = None,
    template: Annotated[Path | None, typer.Option(help="a new job spec file")] = None,
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Change some fields of a schedule."""
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "cron": cron,
            "timezone": timezone,
            "overlap": overlap,
            "misfire_grace_s": misfire_grace_s,
            "skip_if_data_unchanged": skip_if_data_unchanged,
        }.items()
        if v is not None
    }
    if template is not None:
        changes["template"] = load_mapping(template, "job spec")
    if not changes:
        fail("nothing to change; see --help")
    _patch_schedule(schedule, changes, url)


@app.command("pause")
def schedules_pause(
    schedule: Annotated[str, typer.Argument(help="id or name")],
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Stop firing (cron and drift) until resumed."""
    _patch_schedule(schedule, {"enabled": False}, url)


@app.command("resume")
def schedules_resume(
    schedule: Annotated[str, typer.Argument(help="id or name")],
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Fire again from now on (fires and verdicts while paused are not made up)."""
    _patch_schedule(schedule, {"enabled": True}, url)


def _patch_schedule(schedule: str, changes: dict[str, Any], url: str | None) -> None:
    try:
        _print_schedule(client_for(url).update_schedule(schedule, changes))
    except ApiError as exc:
        fail(str(exc))


@app.command("delete")
def schedules_delete(
    schedule: Annotated[str, typer.Argument(help="id or name")],
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Delete a schedule and its events (the jobs it submitted stay)."""
    try:
        client_for(url).delete_schedule(schedule)
    except ApiError as exc:
        fail(str(exc))
    console.print(f"deleted schedule {schedule}")


@app.command("events")
def schedules_events(
    schedule: Annotated[str, typer.Argument(help="id or name")],
    kind: Annotated[str | None, typer.Option(help="fire | skip | misfire | error | ...")] = None,
    limit: Annotated[int, typer.Option()] = 50,
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Fires, skips and misfires of a schedule, newest first, with their reasons."""
    try:
        found = client_for(url).schedule_events(schedule, kind=kind, limit=limit)
    except ApiError as exc:
        fail(str(exc))
    table = Table("at", "kind", "trigger", "fire time", "job", "reason")
    for e in found:
        table.add_row(
            e["at"][:19],
            e["kind"],
            e["trigger"] or "",
            (e["fire_time"] or "")[:19],
            e["job_id"] or "",
            e["message"],
        )
    console.print(table)
