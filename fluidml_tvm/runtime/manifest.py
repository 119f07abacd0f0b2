"""The artifact manifest: what a deployed model directory holds, as JSON, checked field by field."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import ArtifactError
from .files import open_directory, open_regular, replaced_atomically

#: 2: plain file names, the library's sha256, a per-weight crc32, a fingerprint over the graph.
FORMAT_VERSION = 2
MANIFEST_FILE = "manifest.json"
LIBRARY_FILE = "model.so"
WEIGHTS_FILE = "weights.bin"
#: Relax function in the library that returns the build fingerprint.
FINGERPRINT_FUNCTION = "fluidml_fingerprint"
#: numpy dtypes a tensor may have (TVM dtype names that numpy spells the same way).
DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float16", "float32", "float64"]
)
ALIGNMENT = 64  # weights start at multiples of 64 bytes, after a 64-byte header
MAX_MANIFEST_BYTES = 16 << 20
_MAX_SIZE = 1 << 40  # no tensor, offset or file is anywhere near 1 TiB
_MAX_RANK = 32
_MAX_ITEMS = 1 << 20
_MAX_TEXT = 4096


@dataclass(frozen=True)
class TensorSpec:
    """A model input: name, static shape (-1: any size) and numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class WeightEntry:
    """One weight in the weights file: its final (re-laid-out) shape, its byte range and their crc32."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int
    crc32: int


def fingerprint(graph: str, target: str, inputs, weights) -> str:
    """sha256 (hex) of what a build fixed: the graph's hash, the target, the inputs and the weight
    table, whose crc32s stand for the weight bytes. Equal fingerprints, interchangeable files."""
    record = {
        "graph": graph, "target": target,
        "inputs": [asdict(s) for s in inputs], "weights": [asdict(w) for w in weights],
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """Everything the deploy side needs to know before touching the library or the weights.

    ``graph`` identifies the compiled module (a structural hash of what was compiled),
    ``library_sha256`` the library file. ``weights_file`` is None when the weights are
    embedded in the library as constants. ``fingerprint`` (:func:`fingerprint`) covers the
    graph, target, inputs and weight table; the library and the weights file header carry it.
    """

    fingerprint: str
    graph: str
    target: str
    library: str
    library_sha256: str
    inputs: tuple[TensorSpec, ...]
    weights: tuple[WeightEntry, ...]
    weights_file: str | None
    weights_bytes: int
    format: int = FORMAT_VERSION

    def save(self, directory: str | Path) -> Path:
        """Write ``manifest.json`` by atomic replacement (writers replace it last)."""
        path = Path(directory) / MANIFEST_FILE
        with replaced_atomically(path) as temp:
            temp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path, dir_fd: int | None = None) -> Manifest:
        """Read and check ``directory``'s manifest; :class:`ArtifactError` names the bad field."""
        path = Path(directory) / MANIFEST_FILE
        own_fd = dir_fd is None
        dir_fd = open_directory(directory) if own_fd else dir_fd
        try:
            try:
                fd, info = open_regular(MANIFEST_FILE, "manifest", dir_fd)
            except ArtifactError as err:
                if "is missing" in str(err):
                    raise ArtifactError(
                        f"{path} is missing: {directory} is not a fluidml-tvm artifact"
                    ) from err
                raise
            try:
                if info.st_size > MAX_MANIFEST_BYTES:
                    raise ArtifactError(f"{path} is too long: {info.st_size} bytes (at most {MAX_MANIFEST_BYTES})")
                text = os.pread(fd, MAX_MANIFEST_BYTES + 1, 0)
            finally:
                os.close(fd)
        finally:
            if own_fd:
                os.close(dir_fd)
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise ArtifactError(f"{path} is not JSON: {str(err)[:200]}") from err
        version = raw.get("format") if isinstance(raw, dict) else None
        if version != FORMAT_VERSION or type(version) is not int:
            raise ArtifactError(
                f"{path} has format {_show(version)}; this runtime reads format {FORMAT_VERSION}: "
                "rebuild the artifact with this version of fluidml-tvm"
            )
        try:
            return _parse(raw)
        except _Malformed as err:
            raise ArtifactError(f"{path}: {err}") from None


class _Malformed(Exception):
    pass


def _parse(raw: dict) -> Manifest:
    _keys(raw, "", Manifest)
    weights_file = raw["weights_file"]
    if weights_file is not None:
        weights_file = _file_name(weights_file, "weights_file")
    manifest = Manifest(
        fingerprint=_hex(raw["fingerprint"], "fingerprint", 64),
        graph=_hex(raw["graph"], "graph", None),
        target=_text(raw["target"], "target"),
        library=_file_name(raw["library"], "library"),
        library_sha256=_hex(raw["library_sha256"], "library_sha256", 64),
        inputs=tuple(_input(r, f"inputs[{i}]") for i, r in enumerate(_list(raw["inputs"], "inputs"))),
        weights=tuple(_weight(r, f"weights[{i}]") for i, r in enumerate(_list(raw["weights"], "weights"))),
        weights_file=weights_file,
        weights_bytes=_int(raw["weights_bytes"], "weights_bytes"),
    )
    if weights_file is None and manifest.weights_bytes:
        raise _Malformed("field 'weights_bytes' must be 0 without a weights_file")
    for i, w in enumerate(manifest.weights):
        if w.nbytes != math.prod(w.shape) * _itemsize(w.dtype):
            raise _Malformed(f"field 'weights[{i}].nbytes' is {w.nbytes}, but {w.dtype}{list(w.shape)} takes "
                             f"{math.prod(w.shape) * _itemsize(w.dtype)} bytes")
        if weights_file is not None:
            if w.offset % ALIGNMENT or w.offset < ALIGNMENT:
                raise _Malformed(f"field 'weights[{i}].offset' must be a multiple of {ALIGNMENT} "
                                 f"past the header, got {w.offset}")
            if w.offset + w.nbytes > manifest.weights_bytes:
                raise _Malformed(f"field 'weights[{i}]' ends at byte {w.offset + w.nbytes}, past the end "
                                 f"of the {manifest.weights_bytes}-byte weights file")
    expected = fingerprint(manifest.graph, manifest.target, manifest.inputs, manifest.weights)
    if expected != manifest.fingerprint:
        raise _Malformed("its fields do not hash to its 'fingerprint' (edited, or mixed from two builds)")
    return manifest


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _keys(record, field: str, kind) -> None:
    where = f"field {field!r}" if field else "the manifest"
    if not isinstance(record, dict):
        raise _Malformed(f"{where} must be an object, got {_show(record)}")
    expected = set(kind.__dataclass_fields__)
    for key in sorted(expected - record.keys()):
        raise _Malformed(f"field {(field + '.' if field else '') + key!r} is missing")
    for key in sorted(record.keys() - expected, key=str):
        raise _Malformed(f"{where} has an unknown field {_show(key)}")


def _int(value, field: str, low: int = 0) -> int:
    if type(value) is not int or not low <= value <= _MAX_SIZE:
        raise _Malformed(f"field {field!r} must be an integer in [{low}, 2**40], got {_show(value)}")
    return value


def _text(value, field: str) -> str:
    if not isinstance(value, str) or len(value) > _MAX_TEXT or "\0" in value:
        raise _Malformed(f"field {field!r} must be a string of at most {_MAX_TEXT} characters, got {_show(value)}")
    return value


def _hex(value, field: str, length: int | None) -> str:
    text = _text(value, field)
    if (length and len(text) != length) or not text or any(c not in "0123456789abcdef" for c in text):
        raise _Malformed(f"field {field!r} must be {length or 'some'} lowercase hex digits, got {_show(value)}")
    return text


def _file_name(value, field: str) -> str:
    """A plain file name inside the artifact directory: no separators, no '..', not absolute."""
    text = _text(value, field)
    if text in ("", ".", "..") or "/" in text or "\\" in text or len(text) > 255:
        raise _Malformed(f"field {field!r} must be a plain file name inside the artifact directory, got {_show(value)}")
    return text


def _list(value, field: str) -> list:
    if not isinstance(value, list) or len(value) > _MAX_ITEMS:
        raise _Malformed(f"field {field!r} must be a list, got {_show(value)}")
    return value


def _shape(value, field: str, low: int) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > _MAX_RANK:
        raise _Malformed(f"field {field!r} must be a list of at most {_MAX_RANK} sizes, got {_show(value)}")
    shape = tuple(_int(d, f"{field}[{i}]", low) for i, d in enumerate(value))
    if math.prod(max(d, 1) for d in shape) > _MAX_SIZE:
        raise _Malformed(f"field {field!r} has more than 2**40 elements: {_show(value)}")
    return shape


def _dtype(value, field: str) -> str:
    if not isinstance(value, str) or value not in DTYPES:
        raise _Malformed(f"field {field!r} must be one of {', '.join(sorted(DTYPES))}, got {_show(value)}")
    return value


def _itemsize(dtype: str) -> int:
    return np.dtype(dtype).itemsize


def _input(record, field: str) -> TensorSpec:
    _keys(record, field, TensorSpec)
    return TensorSpec(
        _text(record["name"], f"{field}.name"),
        _shape(record["shape"], f"{field}.shape", low=-1),  # -1: a symbolic dimension
        _dtype(record["dtype"], f"{field}.dtype"),
    )


def _weight(record, field: str) -> WeightEntry:
    _keys(record, field, WeightEntry)
    return WeightEntry(
        _text(record["name"], f"{field}.name"),
        _shape(record["shape"], f"{field}.shape", low=0),
        _dtype(record["dtype"], f"{field}.dtype"),
        _int(record["offset"], f"{field}.offset"),
        _int(record["nbytes"], f"{field}.nbytes"),
        _int(record["crc32"], f"{field}.crc32"),
    )
