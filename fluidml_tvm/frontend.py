"""ONNX to Relax, with errors that name the file, the node and the op."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx


class ModelImportError(ValueError):
    """An ONNX model that cannot be imported; the message says what and where."""


def load_onnx(model, *, name: str | None = None) -> onnx.ModelProto:
    """Read an ONNX file (or pass a ModelProto through) and check it is well formed."""
    if isinstance(model, onnx.ModelProto):
        proto, where = model, name or model.graph.name or "<ModelProto>"
    else:
        path = Path(os.fspath(model))
        where = str(path)
        if not path.is_file():
            raise ModelImportError(f"{where}: no such ONNX file")
        try:
            proto = onnx.load(str(path))
        except Exception as err:  # protobuf raises DecodeError and others
            raise ModelImportError(f"{where}: not a readable ONNX model ({type(err).__name__}: {err})") from None
    if not proto.graph.node:
        raise ModelImportError(f"{where}: the graph has no nodes")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        raise ModelImportError(f"{where}: invalid ONNX model: {str(err).strip().splitlines()[0]}") from None
    return proto


def input_shapes(proto: onnx.ModelProto, where: str, overrides: dict | None = None) -> dict:
    """Static shapes of the graph inputs; a symbolic dimension needs an override."""
    overrides = overrides or {}
    inits = {i.name for i in proto.graph.initializer}
    shapes = {}
    for inp in proto.graph.input:
        if inp.name in inits:
            continue
        if inp.name in overrides:
            shapes[inp.name] = list(overrides[inp.name])
            continue
        dims = inp.type.tensor_type.shape.dim
        bad = [d.dim_param or "?" for d in dims if not d.HasField("dim_value") or d.dim_value <= 0]
        if bad or not inp.type.tensor_type.HasField("shape"):
            raise ModelImportError(
                f"{where}: input '{inp.name}' has no static shape (dimensions {bad or 'unknown'}); "
                f"give one, e.g. input_shapes={{'{inp.name}': [1, 128]}} or --input-shape "
                f"{inp.name}=1,128"
            )
        shapes[inp.name] = [d.dim_value for d in dims]
    return shapes


def parse_input_shapes(items) -> dict | None:
    """``["input_ids=1,128", ...]`` (the CLI's ``--input-shape``) as ``{name: [dims]}``."""
    shapes = {}
    for item in items:
        name, _, dims = item.partition("=")
        if not dims:
            raise ValueError(f"--input-shape {item!r}: expected NAME=D0,D1,...")
        shapes[name] = [int(d) for d in dims.split(",")]
    return shapes or None


def unsupported_ops(proto: onnx.ModelProto) -> list[tuple[str, str]]:
    """``(node name, op_type)`` of nodes TVM's ONNX importer has no converter for."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = _get_convert_map()
    out = []
    for i, node in enumerate(proto.graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type not in known:
            op = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
            out.append((node.name or f"#{i}", op))
    return out


def onnx_to_relax(model, *, input_shape_overrides: dict | None = None,
                  keep_params_in_input: bool = False):
    """Import an ONNX path or ModelProto into a Relax IRModule (static shapes).

    Returns ``(mod, params)``; ``params`` is empty unless ``keep_params_in_input``.
    """
    from tvm import relax

    from .onnx_gathers import from_onnx  # TVM's importer, gathers labelled with their ONNX node

    where = str(model) if not isinstance(model, onnx.ModelProto) else (model.graph.name or "<ModelProto>")
    proto = load_onnx(model, name=where)
    missing = unsupported_ops(proto)
    if missing:
        listed = ", ".join(f"node '{n}' ({op})" for n, op in missing[:10])
        raise ModelImportError(f"{where}: operators TVM cannot import: {listed}")
    shapes = input_shapes(proto, where, input_shape_overrides)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = from_onnx(proto, shape_dict=shapes, keep_params_in_input=keep_params_in_input)
    except Exception as err:
        raise ModelImportError(
            f"{where}: TVM's ONNX importer failed: {type(err).__name__}: {_first_line(err)}"
        ) from err
    params = {}
    if keep_params_in_input:
        mod, params = relax.frontend.detach_params(mod)
    return mod, params


def _first_line(err) -> str:
    text = str(err).strip()
    return text.splitlines()[-1] if text else ""


def random_inputs(proto: onnx.ModelProto, seed: int = 0) -> dict:
    """Inputs for any static-shape model: masks all ones, other integers small ids, floats normal."""
    inits = {i.name for i in proto.graph.initializer}
    specs = [(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim],
              onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
             for v in proto.graph.input if v.name not in inits]
    return random_tensors(specs, seed)


def random_tensors(specs, seed: int = 0) -> dict:
    """``{name: array}`` for ``(name, shape, dtype)`` specs, filled as :func:`random_inputs` does."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for name, shape, dtype in specs:
        if np.issubdtype(dtype, np.integer):
            x = np.ones(shape, dtype) if "mask" in name else rng.integers(0, 100, shape)
        else:
            x = rng.standard_normal(shape)
        out[name] = np.asarray(x).astype(dtype)
    return out
