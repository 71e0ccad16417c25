"""/schedules: cron and drift-triggered retraining (create, list, show, change, delete)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from fovea.platform.api.deps import SessionDep, SettingsDep
from fovea.platform.api.http_errors import error_responses
from fovea.platform.api.schemas import ScheduleEventOut, ScheduleList, ScheduleOut
from fovea.platform.retraining import service as svc

router = APIRouter(prefix="/schedules", tags=["schedules"])


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
