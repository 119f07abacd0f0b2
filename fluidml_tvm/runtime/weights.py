"""The weights file: raw tensors at 64-byte aligned offsets, memory-mapped when loaded.

Layout (little-endian)::

    0    8 bytes   magic b"FMLWGT01"
    8    8 bytes   uint64 size of the whole file
    16   32 bytes  the build fingerprint (:func:`fluidml_tvm.runtime.manifest.fingerprint`)
    48   16 bytes  zero
    64   tensors, C-contiguous, each at an offset that is a multiple of 64, zeros between

The table (name, shape, dtype, offset, nbytes, crc32 of each tensor) is in the manifest.
Offsets are multiples of 64 because TVM's allocator and kernels assume 64-byte aligned
data, and mmap returns page-aligned memory, so every tensor can be handed to TVM in place.

Each tensor's bytes are checked against their crc32 at load (``verify``): zlib's crc32
hashes 2.3 GB/s on this machine, sha256 1.3, blake2b 1.0 (BENCHMARKS.md, "Load-time
integrity check"), and a crc32 catches every burst error up to 32 bits; the files are
not defended against a forger (the directory holds code), only against damage and mix-ups.

The mapping is private (copy-on-write) and of the inode opened at load: writers replace
the file by rename, so a loaded model keeps its weights. Truncating the loaded inode
itself (writing into the same file) is out of scope: its pages past the new end fault.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ArtifactError
from .files import open_regular, replaced_atomically
from .manifest import ALIGNMENT, WeightEntry

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
        entries.append(WeightEntry(name, shape, dtype, offset, array.nbytes, zlib.crc32(_bytes(array))))
        end = offset + array.nbytes
    return entries, _align(end)


def _bytes(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def write_weights(
    path: str | Path,
    entries: Sequence[WeightEntry],
    arrays: Sequence[np.ndarray],
    fingerprint_hex: str,
    size: int,
) -> None:
    """Write the weights file described by ``entries`` (from :func:`layout_weights`), replacing
    any file at ``path`` atomically (a process that mapped the old one keeps it)."""
    if not np.little_endian:
        raise NotImplementedError("weights files are little-endian")
    with replaced_atomically(path) as temp, open(temp, "wb") as f:
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
    verify: bool = True,
    dir_fd: int | None = None,
) -> list[np.ndarray]:
    """Map the weights file and return one array per entry, viewing the mapping (no copies).

    ``path`` is relative to ``dir_fd`` when given. Refuses, with :class:`ArtifactError`, a
    file that is missing, not a regular file, of the wrong size, not a weights file, or
    stamped with another fingerprint; ``verify`` also checks each tensor's crc32 (read with
    pread, so pages a run never touches stay out of this process's memory). The arrays
    are writable copy-on-write views (DLPack cannot hand read-only arrays to TVM); writes
    never reach the file.
    """
    fd, info = open_regular(path, "weights file", dir_fd)
    try:
        if info.st_size != size:
            what = "truncated" if info.st_size < size else "too long"
            raise ArtifactError(
                f"weights file {path} is {what}: {info.st_size} bytes, the manifest expects {size}"
            )
        magic, stamped_size, stamp = HEADER.unpack(os.pread(fd, HEADER.size, 0))
        if magic != MAGIC or stamped_size != size:
            raise ArtifactError(f"{path} is not a fluidml-tvm weights file of {size} bytes")
        if stamp.hex() != fingerprint_hex:
            raise ArtifactError(
                f"weights file {path} is from another build: fingerprint {stamp.hex()[:12]}..., "
                f"the manifest expects {fingerprint_hex[:12]}..."
            )
        buf = memoryview(bytearray(_CHUNK))
        for e in entries:
            if e.offset % ALIGNMENT or e.offset < HEADER.size or e.offset + e.nbytes > size:
                raise ArtifactError(f"manifest entry for weight {e.name!r} is outside {path}: {e}")
            if verify and _crc32(fd, e.offset, e.nbytes, buf) != e.crc32:
                raise ArtifactError(f"weights file {path} is corrupt: weight {e.name!r} does not match its crc32")
        mapped = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)  # the mapping keeps the inode
    return [np.ndarray(e.shape, np.dtype(e.dtype), buffer=mapped, offset=e.offset) for e in entries]


_CHUNK = 1 << 20


def _crc32(fd: int, offset: int, nbytes: int, buf: memoryview) -> int:
    # pread into one reused buffer that fits in L2: through the mapping, every page
    # would become resident in this process, read by a run or not.
    crc, end = 0, offset + nbytes
    while offset < end:
        n = os.preadv(fd, [buf[: min(_CHUNK, end - offset)]], offset)
        if n == 0:
            raise ArtifactError("weights file ended while being read")
        crc = zlib.crc32(buf[:n], crc)
        offset += n
    return crc
