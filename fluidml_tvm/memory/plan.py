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
    errors, placed = [], []
    for iv in intervals:
        if iv.name not in plan.placement:
            errors.append(f"{iv.name}: not placed")
            continue
        storage, offset = plan.placement[iv.name]
        if offset < 0 or offset + iv.nbytes > plan.storages[storage]:
            errors.append(f"{iv.name}: [{offset}, {offset + iv.nbytes}) outside storage {storage}")
        placed.append((iv, storage, offset))
    for (a, _, _), (b, _, _) in sharing_pairs(placed):
        errors.append(f"{a.name} and {b.name} are live together and share bytes")
    return errors


def sharing_pairs(placed) -> list:
    """The pairs of ``(Interval, storage, offset)`` that are live at one step and share a byte
    of one storage (empty buffers share nothing): what no valid plan has, but an in-place write."""
    by_storage: dict = {}
    for p in placed:
        by_storage.setdefault(p[1], []).append(p)
    pairs = []
    for group in by_storage.values():
        group.sort(key=lambda p: p[2])
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if b[2] >= a[2] + a[0].nbytes:
                    break  # sorted by offset: no later buffer reaches into a
                if a[0].nbytes and b[0].nbytes and a[0].overlaps(b[0]):
                    pairs.append((a, b))
    return pairs
