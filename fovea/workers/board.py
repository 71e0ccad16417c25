"""The status board: workers push progress and events, the scheduler drains them.

It lives in the key-value store of Ray's GCS (the cluster's own head process), not in an
actor: an idle Ray actor process costs CPU on its own (its task loop checks for
signals every 10 ms, a fixed interval in Ray's core worker), paid for the whole of every
job on a machine whose cores the job wants. A `KVBoard` holds no state of its own beyond
names, so it pickles into every worker and each process speaks to the GCS directly.

Keys, in the Ray namespace of Fovea (backend.NAMESPACE), all under `board/<job_id>/`:
- `attempt`: the newest attempt the scheduler started; a push of an older one is dropped
  and told to stop (a worker whose attempt was given up on, e.g. after its scheduler died
  and the lease expired, stops at its next push instead of training on beside its
  successor);
- `cancel`: set when the job is cancelled; the worker's next push is told to stop;
- `progress/<ns>`: the latest progress (the writer deletes its previous one);
- `event/<ns>-<pid>`: one key per push with events, read in key order.

Each call is a few GCS RPCs; nothing here runs on a training thread (BoardReporter pushes
from a thread of its own). Unlike an actor's methods the calls are not one atomic step: a
push of a stale attempt racing `forget` may leave one progress record of the old attempt
for the next drain; it still stops at its next push.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from typing import Any

from ray.experimental import internal_kv as kv

ROOT = "board/"
TIMEOUT_S = 10  # per GCS call: a control plane that is away fails the call, not hangs it


def _stamp() -> str:
    return f"{time.time_ns():020d}"


class KVBoard:
    def __init__(self, namespace: str) -> None:  # backend.NAMESPACE for the platform
        self.namespace = namespace
        self._last_progress: dict[str, str] = {}  # per process: the key to replace

    def __getstate__(self) -> dict[str, Any]:
        return {"namespace": self.namespace}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.namespace = state["namespace"]
        self._last_progress = {}

    # the GCS client of this process (driver or worker), connected by ray.init
    def _client(self) -> Any:
        client = kv.internal_kv_get_gcs_client()
        if client is None:
            raise RuntimeError("the status board needs a connected Ray (ray.init first)")
        return client

    def _get(self, key: str) -> bytes | None:
        return self._client().internal_kv_get(
            key.encode(), self.namespace.encode(), timeout=TIMEOUT_S
        )

    def _put(self, key: str, value: bytes | str) -> None:
        data = value.encode() if isinstance(value, str) else value
        self._client().internal_kv_put(
            key.encode(), data, True, self.namespace.encode(), timeout=TIMEOUT_S
        )

    def _delete(self, key: str, *, prefix: bool = False) -> None:
        self._client().internal_kv_del(
            key.encode(), prefix, self.namespace.encode(), timeout=TIMEOUT_S
        )

    # workers ----------------------------------------------------------------------------
    def push(
        self,
        job_id: str,
        progress: dict[str, Any] | None,
        events: list[dict[str, Any]],
        attempt: int | None = None,
    ) -> bool:
        """Record progress and events; True when the worker must stop (cancelled, or a
        newer attempt of the job has started, in which case nothing is recorded)."""
        base = f"{ROOT}{job_id}/"
        if attempt is not None:
            newest = self._get(base + "attempt")
            if newest is not None and attempt < int(newest):
                return True
        if progress is not None:
            key = f"{base}progress/{_stamp()}"
            self._put(key, json.dumps(progress))
            previous = self._last_progress.get(job_id)
            if previous is not None:
                self._delete(previous)
            self._last_progress[job_id] = key
        if events:
            self._put(f"{base}event/{_stamp()}-{os.getpid()}", json.dumps(events))
        return self._get(base + "cancel") is not None

    # the scheduler ----------------------------------------------------------------------
    def drain(self) -> dict[str, dict[str, Any]]:
        """{job_id: {"progress": latest or None, "events": [...]}} of everything pushed
        since the last drain; what is handed out is removed."""
        client = self._client()
        listed = client.internal_kv_keys(ROOT.encode(), self.namespace.encode(), timeout=TIMEOUT_S)
        keys = sorted(k.decode() for k in listed)
        wanted: dict[str, list[str]] = defaultdict(list)
        progress: dict[str, str] = {}
        for key in keys:
            parts = key[len(ROOT) :].rsplit("/", 2)  # job, kind, stamp (or job, "attempt")
            if len(parts) != 3:
                continue
            job_id, kind, _ = parts
            if kind == "event":
                wanted[job_id].append(key)
            elif kind == "progress":
                progress[job_id] = key  # sorted: the last is the newest
        taken = [k for ks in wanted.values() for k in ks] + list(progress.values())
        if not taken:
            return {}
        values = client.internal_kv_multi_get(
            [k.encode() for k in taken], self.namespace.encode(), timeout=TIMEOUT_S
        )
        out: dict[str, dict[str, Any]] = {}
        for job_id in set(wanted) | set(progress):
            events: list[dict[str, Any]] = []
            for key in wanted.get(job_id, []):
                raw = values.get(key.encode())
                if raw is not None:
                    events.extend(json.loads(raw))
            raw = values.get(progress[job_id].encode()) if job_id in progress else None
            latest = json.loads(raw) if raw is not None else None
            out[job_id] = {"progress": latest, "events": events}
        for key in taken:
            self._delete(key)
        return out

    def cancel(self, job_id: str) -> None:
        self._put(f"{ROOT}{job_id}/cancel", "1")

    def forget(self, job_id: str, attempt: int = 0) -> None:
        """A new attempt starts: fence the older ones off, clear what they left."""
        base = f"{ROOT}{job_id}/"
        newest = self._get(base + "attempt")
        self._put(base + "attempt", str(max(attempt, int(newest) if newest else 0)))
        for part in ("cancel", "progress/", "event/"):
            self._delete(base + part, prefix=part.endswith("/"))
