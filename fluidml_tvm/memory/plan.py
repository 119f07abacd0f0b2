"""The objects a memory planner consumes and produces."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Interval:
    """A buffer to place: ``nbytes`` live from step ``start`` to ``end`` inclusive."""

    name: str
    nbytes: int
    start: int
    end: int

    def overlaps(self, other: "Interval") -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass(frozen=True)
class StorageSpec:
    """One storage to allocate: its bytes, virtual device and scope."""

    nbytes: int
    device_index: int
    scope: str


@dataclass
class MemoryPlan:
    """Where each buffer lives: ``placement[name] = (storage index, byte offset)``."""

    storages: list  # bytes of each storage; an arena plan has exactly one
    placement: dict = field(default_factory=dict)
    strategy: str = ""
    lower_bound: int = 0  # proved: no plan of the same buffers needs fewer bytes

    @property
    def total_bytes(self) -> int:
        return sum(self.storages)

    @property
    def optimal(self) -> bool:
        return self.total_bytes <= self.lower_bound

    @property
    def gap(self) -> float:
        """How far above the proved bound the plan is (0.0 when optimal)."""
        return self.total_bytes / self.lower_bound - 1.0 if self.lower_bound else 0.0


def live_set_peak(intervals) -> int:
    """The largest total of buffers live at one step: no placement can go below it."""
    events = {}
    for iv in intervals:
        events[iv.start] = events.get(iv.start, 0) + iv.nbytes
        events[iv.end + 1] = events.get(iv.end + 1, 0) - iv.nbytes
    peak = live = 0
    for step in sorted(events):
        live += events[step]
        peak = max(peak, live)
    return peak


def conflicts(plan: MemoryPlan, intervals) -> list:
    """Every way ``plan`` can corrupt data: a buffer missing or outside its storage, or two
    buffers live at one step sharing a byte.  Empty when the plan is valid."""
    errors, by_storage = [], {}
    for iv in intervals:
        if iv.name not in plan.placement:
            errors.append(f"{iv.name}: not placed")
            continue
        storage, offset = plan.placement[iv.name]
        if offset < 0 or offset + iv.nbytes > plan.storages[storage]:
            errors.append(f"{iv.name}: [{offset}, {offset + iv.nbytes}) outside storage {storage}")
        by_storage.setdefault(storage, []).append((offset, iv))
    for placed in by_storage.values():
        placed.sort(key=lambda p: p[0])
        for i, (offset, iv) in enumerate(placed):
            for other_offset, other in placed[i + 1:]:
                if other_offset >= offset + iv.nbytes:
                    break
                if iv.nbytes and other.nbytes and iv.overlaps(other):
                    errors.append(f"{iv.name} and {other.name} are live together and share bytes")
    return errors
