"""The artifact manifest: what a deployed model directory holds, as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
LIBRARY_FILE = "model.so"
WEIGHTS_FILE = "weights.bin"
#: Relax function in the library that returns the build fingerprint.
FINGERPRINT_FUNCTION = "fluidml_fingerprint"


class ArtifactError(ValueError):
    """An artifact that cannot be loaded: missing, truncated, foreign or malformed files."""


@dataclass(frozen=True)
class TensorSpec:
    """A model input: name, static shape and numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class WeightEntry:
    """One weight in the weights file: its final (re-laid-out) shape and its byte range."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Manifest:
    """Everything the deploy side needs to know before touching the library or the weights.

    ``weights_file`` is None when the weights are embedded in the library as constants.
    ``fingerprint`` is the sha256 of the weight table and bytes; the library and the
    weights file header carry the same value.
    """

    fingerprint: str
    target: str
    library: str
    inputs: tuple[TensorSpec, ...]
    weights: tuple[WeightEntry, ...]
    weights_file: str | None
    weights_bytes: int
    format: int = FORMAT_VERSION

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_FILE
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        path = Path(directory) / MANIFEST_FILE
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: {directory} is not a fluidml-tvm artifact")
        try:
            raw = json.loads(path.read_text())
        except ValueError as err:
            raise ArtifactError(f"{path} is not JSON: {err}") from err
        version = raw.get("format") if isinstance(raw, dict) else None
        if version != FORMAT_VERSION:
            raise ArtifactError(
                f"{path} has format {version!r}; this runtime reads {FORMAT_VERSION}"
            )
        try:
            inputs = tuple(TensorSpec(**_tuple_shape(s)) for s in raw.pop("inputs"))
            weights = tuple(WeightEntry(**_tuple_shape(w)) for w in raw.pop("weights"))
            return cls(**raw, inputs=inputs, weights=weights)
        except (KeyError, TypeError) as err:
            raise ArtifactError(f"{path} is malformed: {err!r}") from err


def _tuple_shape(record: dict) -> dict:
    return {**record, "shape": tuple(record["shape"])}
