"""CPU time from ``/proc`` (Linux): of one process, of a process and its children, of the machine."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` from field 3 (state) on: field 2 (comm) is in parentheses and may hold
    spaces, so the fields are split after its last ``)``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used so far (``/proc/PID/stat`` fields 14
    and 15, in clock ticks): its own threads only, not its children's."""
    fields = _stat_fields(pid)
    return (int(fields[14 - 3]) + int(fields[15 - 3])) / _TICK


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process descended from it that is alive now (by ``ppid``, field 4)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry.name))[4 - 3]), []).append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # ended meanwhile
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo += children.get(out[-1], [])
    return out


def machine_cpu() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine so far, summed over its CPUs (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is within user)
    idle = fields[3] + fields[4]
    return (total - idle) / _TICK, total / _TICK
