"""CPU seconds of a stack's process tree, read from /proc (Linux), by process and by role."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def name(pid: int) -> str:
    """A short name: "fovea up (API + scheduler)", "raylet", "ray::IDLE", ..."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in cmd if w]
    if not words:
        return "?"
    if any(w == "fovea" or w.endswith("/fovea") for w in words) or "fovea" in words[:3]:
        command = next((w for w in words if w in ("up", "api", "scheduler")), "up")
        return {"up": "fovea up (API + scheduler)"}.get(command, f"fovea {command}")
    exe = Path(words[0]).name
    if exe.startswith("python") and len(words) > 1:
        script = Path(words[1]).name if not words[1].startswith("-") else " ".join(words[1:3])
        return f"python {script}"[:60]
    return exe[:60]


def tree(root: int) -> dict[int, float]:
    """CPU seconds of `root` and all its descendants, by pid."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            got = _stat(int(entry.name))
            if got is not None:
                stats[int(entry.name)] = got
    keep, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in keep:
                keep.add(pid)
                frontier.append(pid)
    return {pid: stats[pid][1] for pid in keep if pid in stats}


def trees(roots: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for root in roots:
        out.update(tree(root))
    return out


JOB = "the job (training worker and its data loader)"


def role(names: set[str]) -> str:
    """What a process of a running stack does, from the names it had while sampled."""
    if any(n.startswith("ray::fovea-job") for n in names):
        return JOB
    if any(n.startswith("fovea ") for n in names):
        return "Fovea's API and scheduler"
    return "Ray's daemons and idle workers"


class TreeSampler:
    """Samples the CPU of `roots`' trees every `every` s on a thread, from `start` to `stop`,
    so that processes that start and end in between (a job's worker) are counted too. Each
    sample reads /proc through (a few ms of CPU): every 2 s it costs ~0.2% of a core."""

    def __init__(self, roots: list[int], every: float = 2.0) -> None:
        self.roots, self.every = roots, every
        self.snapshots: list[tuple[float, dict[int, float]]] = []
        self.names: dict[int, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def _sample(self) -> None:
        now = time.monotonic()
        cpu = trees(self.roots)
        for pid in cpu:
            self.names.setdefault(pid, set()).add(name(pid))
        self.snapshots.append((now, cpu))

    def start(self) -> TreeSampler:
        self._sample()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def stop(self) -> TreeSampler:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self

    def by_role(self, first: int = 0, last: int = -1) -> dict[str, float]:
        """CPU seconds by role between two snapshots; a process that started meanwhile
        counts from 0, one that ended counts until it was last seen."""
        last = last % len(self.snapshots)
        base = self.snapshots[first][1]
        seen: dict[int, float] = {}
        for _, cpu in self.snapshots[first : last + 1]:
            seen.update(cpu)
        out: dict[str, float] = {}
        for pid, cpu in seen.items():
            key = role(self.names[pid])
            out[key] = out.get(key, 0.0) + cpu - base.get(pid, 0.0)
        return out

    def busy_window(self, key: str, cores: float) -> tuple[int, int] | None:
        """(first, last) snapshot of the span in which `key` used more than `cores`: from
        the first interval above it to the last one (to within `every`)."""
        above = []
        for i in range(1, len(self.snapshots)):
            spent = self.by_role(i - 1, i).get(key, 0.0)
            if spent / (self.snapshots[i][0] - self.snapshots[i - 1][0]) > cores:
                above.append(i)
        return (above[0] - 1, above[-1]) if above else None

    def seconds(self, first: int = 0, last: int = -1) -> float:
        return self.snapshots[last][0] - self.snapshots[first][0]
