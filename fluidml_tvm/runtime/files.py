"""Artifact files at the trust boundary: plain names, regular files, atomic replacement.

The artifact directory is trusted as code (its library is code); what is refused here is a
name that escapes it (a symlink), a file that is not a regular file (a FIFO blocks, a device
never ends), and a library whose bytes are not the ones the manifest names: the library is
hashed through a file descriptor and loaded through the same descriptor, so none of its code
runs before its checksum matches. Writers replace files by rename, so a process that has a
file mapped keeps the old inode and never sees a torn file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ArtifactError

_CHUNK = 1 << 20
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer (it is refused
# by the fstat check right after); it has no effect on regular files.
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def open_directory(directory: str | Path) -> int:
    """A descriptor of the artifact directory, in which every file name is then resolved."""
    try:
        return os.open(directory, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY)
    except OSError as err:
        raise ArtifactError(f"artifact directory {directory} cannot be opened: {err.strerror}") from err


def open_regular(name: str | Path, what: str, dir_fd: int | None = None) -> tuple[int, os.stat_result]:
    """Open ``name`` (relative to ``dir_fd``) for reading without following a symlink; a regular file only."""
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError as err:
        raise ArtifactError(f"{what} {name} is missing") from err
    except OSError as err:  # ELOOP: a symlink
        raise ArtifactError(f"{what} {name} cannot be opened: {err.strerror} (symlinks are refused)") from err
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ArtifactError(f"{what} {name} is not a regular file")
    return fd, info


def sha256_of(fd: int, size: int) -> str:
    """sha256 (hex) of the first ``size`` bytes of ``fd``, read with pread (the offset is not moved)."""
    digest, buf, offset = hashlib.sha256(), bytearray(_CHUNK), 0
    view = memoryview(buf)
    while offset < size:
        n = os.preadv(fd, [view[: min(_CHUNK, size - offset)]], offset)
        if n == 0:
            break  # shorter than fstat said: the digest will not match
        digest.update(view[:n])
        offset += n
    return digest.hexdigest()


def load_library(dir_fd: int, name: str, sha256: str, loader) -> object:
    """Verify the library ``name`` against ``sha256``, then load it through the descriptor just hashed.

    ``loader(path, "so")`` is tvm_ffi's ``ffi.Module.load_from_file.so``: it dlopens
    ``/proc/self/fd/N``, which is the inode that was hashed whatever the directory now holds
    under that name. A truncated or foreign library is refused before dlopen, so it can
    neither run a constructor nor fault (SIGBUS) on a page past its end.
    """
    fd, info = open_regular(name, "library", dir_fd)
    try:
        actual = sha256_of(fd, info.st_size)
        if actual != sha256:
            raise ArtifactError(
                f"library {name} does not match the manifest (sha256 {actual[:12]}..., the manifest "
                f"says {sha256[:12]}...): damaged, truncated or from another build"
            )
        if not os.path.isdir("/proc/self/fd"):
            raise ArtifactError("loading a library through its descriptor needs /proc/self/fd (Linux)")
        # dlopen returns the library already loaded under the same name without opening
        # anything: "/proc/self/fd/N" reuses N, so it is reached through a symlink of a name
        # used once. (dlopen also matches by inode, which is right: same inode, same bytes.)
        try:
            scratch = tempfile.mkdtemp(prefix="fluidml-library-")
        except OSError:  # no writable temporary directory: the fingerprint check still
            return loader(f"/proc/self/fd/{fd}", "so")  # refuses a stale library
        try:
            link = os.path.join(scratch, "model.so")
            os.symlink(f"/proc/self/fd/{fd}", link)
            return loader(link, "so")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """Yield a temporary name beside ``path``; once written, fsync it and rename it onto ``path``.

    A reader sees the old file or the new one, never a partial one, and a process that
    has the old one mapped keeps it (the rename gives ``path`` a new inode).
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield temp
        fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)
