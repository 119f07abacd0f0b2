"""fluidml_tvm.runtime.manifest: every malformed manifest is an ArtifactError naming the field
(issue 8, items 4 and 7: wrong JSON types gave a raw TypeError)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm.script import ir as I
from tvm.script import relax as R

from fluidml_tvm import runtime
from fluidml_tvm.artifact import export_artifact
from fluidml_tvm.runtime.manifest import FORMAT_VERSION, MAX_MANIFEST_BYTES, ArtifactError


@I.ir_module
class Two:
    @R.function
    def main(x: R.Tensor((2, 4), "float32"), w: R.Tensor((4, 4), "float32"), b: R.Tensor((4,), "float32")):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.add(R.matmul(x, w), b)
            R.output(y)
        return y


X = np.arange(8, dtype="float32").reshape(2, 4)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rng = np.random.default_rng(0)
    info = export_artifact(Two, [rng.standard_normal((4, 4), "float32"), rng.standard_normal(4).astype("float32")],
                           "llvm", tmp_path_factory.mktemp("m") / "two")
    return info.directory, json.loads((info.directory / "manifest.json").read_text()), runtime.load(info.directory)(X)


@pytest.fixture
def artifact(built, tmp_path) -> Path:
    return Path(shutil.copytree(built[0], tmp_path / "two"))


def _write(artifact: Path, raw) -> None:
    (artifact / "manifest.json").write_text(raw if isinstance(raw, str) else json.dumps(raw))


def _set(raw: dict, where: str, value) -> dict:
    raw = copy.deepcopy(raw)
    *path, last = where.split(".")
    node = raw
    for key in path:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return raw


@pytest.mark.parametrize(
    "where, value, field",
    [
        ("weights_bytes", "128", "weights_bytes"),
        ("weights_bytes", True, "weights_bytes"),
        ("weights_bytes", 2**80, "weights_bytes"),
        ("weights.0.offset", -64, "weights[0].offset"),
        ("weights.0.offset", 64.0, "weights[0].offset"),
        ("weights.0.offset", 1 << 39, "weights[0]"),  # past the end of the file
        ("weights.0.nbytes", 2**70, "weights[0].nbytes"),
        ("weights.0.nbytes", 4, "weights[0].nbytes"),  # disagrees with shape and dtype
        ("weights.0.shape", [-4, 4], "weights[0].shape[0]"),
        ("weights.0.shape", "4x4", "weights[0].shape"),
        ("weights.0.shape", [2**30, 2**30], "weights[0].shape"),
        ("weights.0.dtype", "complex64", "weights[0].dtype"),
        ("weights.0.dtype", "object", "weights[0].dtype"),
        ("weights.0.dtype", ["float32"], "weights[0].dtype"),
        ("weights.0.crc32", None, "weights[0].crc32"),
        ("weights.0.name", {"a": [1, {"b": []}]}, "weights[0].name"),
        ("weights.0", [[[]]], "weights[0]"),
        ("weights", {"w": 1}, "weights"),
        ("inputs.0.shape", [2, -5], "inputs[0].shape[1]"),
        ("inputs.0.dtype", "float", "inputs[0].dtype"),
        ("inputs.0.extra", 1, "inputs[0]"),
        ("inputs", None, "inputs"),
        ("fingerprint", 123, "fingerprint"),
        ("fingerprint", "ZZ" * 32, "fingerprint"),
        ("library_sha256", "ab", "library_sha256"),
        ("library", None, "library"),
        ("weights_file", 7, "weights_file"),
        ("target", ["llvm"], "target"),
        ("graph", "", "graph"),
    ],
)
def test_wrong_field_named(built, artifact, where, value, field):
    _write(artifact, _set(built[1], where, value))
    with pytest.raises(ArtifactError, match=rf"manifest.json: .*field '{field.replace('[', '.').replace(']', '.')}"):
        runtime.load(artifact)


def test_missing_and_unknown_fields_named(built, artifact):
    raw = dict(built[1])
    del raw["library_sha256"]
    _write(artifact, raw)
    with pytest.raises(ArtifactError, match="field 'library_sha256' is missing"):
        runtime.load(artifact)
    _write(artifact, {**built[1], "extra": 1})
    with pytest.raises(ArtifactError, match="the manifest has an unknown field 'extra'"):
        runtime.load(artifact)


@pytest.mark.parametrize("text", ["[1, 2]", "null", '"manifest"', "[" * 100_000 + "]" * 100_000, "{"])
def test_not_an_object_refused(artifact, text):
    _write(artifact, text)
    with pytest.raises(ArtifactError, match="manifest.json (is not JSON|has format None)"):
        runtime.load(artifact)


def test_too_long_manifest_refused_unread(artifact):
    with open(artifact / "manifest.json", "a") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)
    with pytest.raises(ArtifactError, match="manifest.json is too long"):
        runtime.load(artifact)


@pytest.mark.parametrize("version", [1, "2", None])
def test_old_format_asks_for_a_rebuild(built, artifact, version):
    _write(artifact, {**built[1], "format": version})
    with pytest.raises(ArtifactError, match=f"format {version!r}; this runtime reads format {FORMAT_VERSION}: rebuild"):
        runtime.load(artifact)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_manifest_mutations_load_identically_or_raise_artifact_error(built, artifact, data):
    """Replace, delete or add a random node of the manifest: the load either works and gives the
    same output, or raises ArtifactError (never TypeError, KeyError, a crash or a different answer)."""
    raw = copy.deepcopy(built[1])
    for _ in range(data.draw(st.integers(1, 3))):
        *steps, key = data.draw(st.sampled_from([p for p in _paths(raw) if p]))
        parent = raw
        for step in steps:
            parent = parent[step]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[key] = data.draw(_JSON)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[data.draw(st.text(max_size=6))] = data.draw(_JSON)
        else:
            parent.insert(key, data.draw(_JSON))
    _write(artifact, raw)
    try:
        model = runtime.load(artifact)
    except ArtifactError as err:
        assert "\n" not in str(err)
        return
    assert np.array_equal(model(X), built[2])
