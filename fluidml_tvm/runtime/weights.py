"""The weights file: raw tensors at 64-byte aligned offsets, memory-mapped when loaded.

Layout (little-endian)::

    0    8 bytes   magic b"FMLWGT01"
    8    8 bytes   uint64 size of the whole file
    16   32 bytes  fingerprint: sha256 of the weight table (JSON) and the weight bytes
    48   16 bytes  zero
    64   tensors, C-contiguous, each at an offset that is a multiple of 64, zeros between

The table (name, shape, dtype, offset, nbytes of each tensor) is in the manifest. Offsets
are multiples of 64 because TVM's allocator and kernels assume 64-byte aligned data, and
mmap returns page-aligned memory, so every tensor can be handed to TVM in place.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import struct
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .manifest import ArtifactError, WeightEntry

ALIGNMENT = 64
MAGIC = b"FMLWGT01"
HEADER = struct.Struct("<8sQ32s16x")


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def layout_weights(named: Sequence[tuple[str, np.ndarray]]) -> tuple[list[WeightEntry], int]:
    """Place the tensors one after another at aligned offsets; return the table and file size."""
    entries, end = [], HEADER.size
    for name, array in named:
        offset = _align(end)
        shape, dtype = tuple(array.shape), array.dtype.name
        entries.append(WeightEntry(name, shape, dtype, offset, array.nbytes))
        end = offset + array.nbytes
    return entries, _align(end)


def _bytes(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def fingerprint(entries: Sequence[WeightEntry], arrays: Sequence[np.ndarray]) -> str:
    """sha256 (hex) of the weight table and the weight bytes: equal fingerprints, same weights."""
    digest = hashlib.sha256(json.dumps([asdict(e) for e in entries]).encode())
    for array in arrays:
        digest.update(_bytes(array))
    return digest.hexdigest()


def write_weights(
    path: str | Path,
    entries: Sequence[WeightEntry],
    arrays: Sequence[np.ndarray],
    fingerprint_hex: str,
    size: int,
) -> None:
    """Write the weights file described by ``entries`` (from :func:`layout_weights`)."""
    if not np.little_endian:
        raise NotImplementedError("weights files are little-endian")
    with open(path, "wb") as f:
        f.write(HEADER.pack(MAGIC, size, bytes.fromhex(fingerprint_hex)))
        for entry, array in zip(entries, arrays, strict=True):
            f.seek(entry.offset)
            f.write(_bytes(array))
        f.truncate(size)


def open_weights(
    path: str | Path,
    entries: Sequence[WeightEntry],
    fingerprint_hex: str,
    size: int,
    verify: bool = False,
) -> list[np.ndarray]:
    """Map the weights file and return one array per entry, viewing the mapping (no copies).

    Refuses, with :class:`ArtifactError`, a file that is missing, of the wrong size, not a
    weights file, or stamped with another fingerprint; ``verify`` also re-hashes the bytes.
    The arrays are writable copy-on-write views (DLPack cannot hand read-only arrays to
    TVM); writes never reach the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"weights file {path} is missing")
    actual = path.stat().st_size
    if actual != size:
        what = "truncated" if actual < size else "too long"
        raise ArtifactError(
            f"weights file {path} is {what}: {actual} bytes, the manifest expects {size}"
        )
    with open(path, "rb") as f:
        magic, stamped_size, stamp = HEADER.unpack(f.read(HEADER.size))
        if magic != MAGIC or stamped_size != size:
            raise ArtifactError(f"{path} is not a fluidml-tvm weights file of {size} bytes")
        if stamp.hex() != fingerprint_hex:
            raise ArtifactError(
                f"weights file {path} is from another build: fingerprint {stamp.hex()[:12]}..., "
                f"the manifest expects {fingerprint_hex[:12]}..."
            )
        mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    arrays = []
    for e in entries:
        dtype = np.dtype(e.dtype)
        count = int(np.prod(e.shape, dtype=np.int64))
        if (
            e.offset % ALIGNMENT
            or e.offset < HEADER.size
            or e.offset + e.nbytes > size
            or e.nbytes != count * dtype.itemsize
        ):
            raise ArtifactError(f"manifest entry for weight {e.name!r} is corrupt: {e}")
        arrays.append(np.ndarray(e.shape, dtype, buffer=mapped, offset=e.offset))
    if verify and fingerprint(entries, arrays) != fingerprint_hex:
        raise ArtifactError(f"weights file {path} is corrupt: its bytes do not hash to its stamp")
    return arrays
