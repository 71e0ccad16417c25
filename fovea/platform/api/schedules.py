"""/schedules: cron and drift-triggered retraining (create, list, show, change, delete)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel

from fovea.platform.api.deps import SessionDep, SettingsDep
from fovea.platform.api.http_errors import error_responses
from fovea.platform.retraining import cron
from fovea.platform.retraining import service as svc
from fovea.platform.store import Schedule, ScheduleEvent

router = APIRouter(prefix="/schedules", tags=["schedules"])


class ScheduleEventOut(BaseModel):
    id: int
    at: datetime
    kind: str
    trigger: str | None
    fire_time: datetime | None
    job_id: str | None
    message: str
    data: dict[str, Any] | None

    @classmethod
    def of(cls, e: ScheduleEvent) -> ScheduleEventOut:
        return cls(
            id=e.id,
            at=e.at,
            kind=e.kind,
            trigger=e.trigger,
            fire_time=e.fire_time,
            job_id=e.job_id,
            message=e.message,
            data=e.data,
        )


class ScheduleOut(BaseModel):
    id: str
    name: str
    template: dict[str, Any]
    cron: str | None
    cron_description: str | None  # e.g. "At 03:00 every day"
    timezone: str
    enabled: bool
    overlap: str
    misfire_grace_s: int
    skip_if_data_unchanged: bool
    drift: svc.DriftTriggerSpec | None
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    last_job_id: str | None
    created_at: datetime
    updated_at: datetime
    events: list[ScheduleEventOut] | None = None  # newest first

    @classmethod
    def of(cls, s: Schedule, *, events: list[ScheduleEvent] | None = None) -> ScheduleOut:
        return cls(
            id=s.id,
            name=s.name,
            template=s.template,
            cron=s.cron,
            cron_description=cron.describe(s.cron) if s.cron else None,
            timezone=s.timezone,
            enabled=s.enabled,
            overlap=s.overlap,
            misfire_grace_s=s.misfire_grace_s,
            skip_if_data_unchanged=s.skip_if_data_unchanged,
            drift=svc.spec_of(s).drift,
            next_fire_at=s.next_fire_at,
            last_fire_at=s.last_fire_at,
            last_job_id=s.last_job_id,
            created_at=s.created_at,
            updated_at=s.updated_at,
            events=None if events is None else [ScheduleEventOut.of(e) for e in events],
        )


class ScheduleList(BaseModel):
    items: list[ScheduleOut]


_BY_ID = {"parameters": {"schedule_id": "$response.body#/id"}}
_LINKS = {
    "GetSchedule": {"operationId": "get_schedule_schedules__schedule_id__get", **_BY_ID},
    "UpdateSchedule": {"operationId": "update_schedule_schedules__schedule_id__patch", **_BY_ID},
    "DeleteSchedule": {"operationId": "delete_schedule_schedules__schedule_id__delete", **_BY_ID},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ScheduleOut,
    responses={
        201: {"description": "the schedule", "links": _LINKS},
        **error_responses(409),
    },
)
def create_schedule(
    spec: svc.ScheduleSpec, session: SessionDep, settings: SettingsDep
) -> ScheduleOut:
    schedule = svc.create_schedule(session=session, spec=spec, data_roots=settings.data_roots)
    return ScheduleOut.of(schedule)


@router.get("", response_model=ScheduleList)
def list_schedules(session: SessionDep) -> ScheduleList:
    return ScheduleList(items=[ScheduleOut.of(s) for s in svc.list_schedules(session=session)])


@router.get("/{schedule_id}", response_model=ScheduleOut)
def get_schedule(
    schedule_id: str,
    session: SessionDep,
    events: Annotated[int, Query(ge=0, le=1000, description="newest events to include")] = 20,
) -> ScheduleOut:
    schedule = svc.get_schedule(session=session, schedule_id=schedule_id)
    recent = svc.schedule_events(session=session, schedule_id=schedule.id, limit=events)
    return ScheduleOut.of(schedule, events=recent)


@router.get("/{schedule_id}/events", response_model=list[ScheduleEventOut])
def list_events(
    schedule_id: str,
    session: SessionDep,
    kind: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ScheduleEventOut]:
    schedule = svc.get_schedule(session=session, schedule_id=schedule_id)
    found = svc.schedule_events(session=session, schedule_id=schedule.id, limit=limit, kind=kind)
    return [ScheduleEventOut.of(e) for e in found]


@router.patch("/{schedule_id}", response_model=ScheduleOut)
def update_schedule(
    schedule_id: str, patch: svc.SchedulePatch, session: SessionDep, settings: SettingsDep
) -> ScheduleOut:
    schedule = svc.update_schedule(
        session=session, schedule_id=schedule_id, patch=patch, data_roots=settings.data_roots
    )
    return ScheduleOut.of(schedule)


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_schedule(schedule_id: str, session: SessionDep) -> Response:
    svc.delete_schedule(session=session, schedule_id=schedule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
