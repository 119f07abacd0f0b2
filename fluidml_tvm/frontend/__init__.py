"""ONNX to Relax, with errors that name the file, the node and the op."""

from __future__ import annotations

import operator
import os
import warnings
from pathlib import Path

import onnx
import onnx.shape_inference


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
    """Static shapes of the graph inputs; a symbolic dimension needs an override.

    An override (``--input-shape``) may only fix symbolic dimensions: it must
    name an input of the model, keep its rank and static dimensions (ONNX
    Runtime refuses any other shape too), and give one value to a dimension
    name that several inputs share.
    """
    overrides = overrides or {}
    inits = {i.name for i in proto.graph.initializer}
    graph_inputs = [inp for inp in proto.graph.input if inp.name not in inits]
    names = [inp.name for inp in graph_inputs]
    unknown = [n for n in overrides if n not in names]
    if unknown:
        raise ModelImportError(f"{where}: --input-shape {unknown[0]}=...: the model has no input {unknown[0]!r} "
                               f"(its inputs: {', '.join(names)})")
    shapes = {}
    bound: dict[str, tuple[str, int]] = {}  # dimension name -> (input that set it, value)
    for inp in graph_inputs:
        dims = inp.type.tensor_type.shape.dim
        if inp.name in overrides:
            shapes[inp.name] = _checked_override(inp, list(overrides[inp.name]), bound, where)
            continue
        bad = [d.dim_param or "?" for d in dims if not d.HasField("dim_value") or d.dim_value <= 0]
        if bad or not inp.type.tensor_type.HasField("shape"):
            raise ModelImportError(
                f"{where}: input '{inp.name}' has no static shape (dimensions {bad or 'unknown'}); "
                f"give one, e.g. input_shapes={{'{inp.name}': [1, 128]}} or --input-shape "
                f"{inp.name}=1,128"
            )
        shapes[inp.name] = [d.dim_value for d in dims]
    return shapes


def _checked_override(inp, shape: list, bound: dict, where: str) -> list:
    """``shape`` for ``inp`` if it only fixes symbolic dimensions, consistently with the other overrides."""
    flag = f"--input-shape {inp.name}={','.join(map(str, shape))}"
    try:
        shape = [operator.index(d) for d in shape]  # ints, numpy ints; not floats or strings
    except TypeError:
        shape = [0]
    if not shape or any(d <= 0 for d in shape):
        raise ModelImportError(f"{where}: {flag}: dimensions must be positive integers")
    if not inp.type.tensor_type.HasField("shape"):
        return shape  # the model says nothing about this input's shape
    dims = inp.type.tensor_type.shape.dim
    declared = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?") for d in dims]
    if len(shape) != len(dims):
        raise ModelImportError(f"{where}: {flag}: input '{inp.name}' has rank {len(dims)} "
                               f"(dimensions {declared}), not {len(shape)}")
    for i, (d, value) in enumerate(zip(dims, shape)):
        if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != value:
            raise ModelImportError(f"{where}: {flag}: dimension {i} of input '{inp.name}' is static, "
                                   f"{d.dim_value} (dimensions {declared}); only symbolic ones can be set")
        if d.dim_param:
            other, known = bound.setdefault(d.dim_param, (inp.name, value))
            if known != value:
                raise ModelImportError(
                    f"{where}: {flag}: dimension '{d.dim_param}' is {value} here but {known} in input "
                    f"'{other}': the model gives both the same size")
    return shape


def parse_input_shapes(items) -> dict | None:
    """``["input_ids=1,128", ...]`` (the CLI's ``--input-shape``) as ``{name: [dims]}``; ValueError names a bad item."""
    shapes = {}
    for item in items:
        name, _, dims = item.partition("=")
        try:
            shape = [int(d) for d in dims.split(",")]
        except ValueError:
            shape = []
        if not name or not shape or any(d <= 0 for d in shape):
            raise ValueError(f"--input-shape {item!r}: expected NAME=D0,D1,... with positive integer "
                             f"dimensions, e.g. input_ids=1,128")
        if name in shapes:
            raise ValueError(f"--input-shape {item!r}: input '{name}' is given twice")
        shapes[name] = shape
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

    from .onnx_labels import from_onnx  # TVM's importer, each call labelled with its ONNX node

    where = str(model) if not isinstance(model, onnx.ModelProto) else (model.graph.name or "<ModelProto>")
    proto = load_onnx(model, name=where)
    missing = unsupported_ops(proto)
    if missing:
        listed = ", ".join(f"node '{n}' ({op})" for n, op in missing[:10])
        raise ModelImportError(f"{where}: operators TVM cannot import: {listed}")
    shapes = input_shapes(proto, where, input_shape_overrides)
    if input_shape_overrides:
        _check_shapes_fit(proto, input_shape_overrides, where)
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


def _check_shapes_fit(proto: onnx.ModelProto, overrides: dict, where: str) -> None:
    """ModelImportError naming the ``--input-shape`` shapes when ONNX shape inference fails with them, not without."""
    reason = _strict_inference_error(proto, overrides)
    if reason and not _strict_inference_error(proto, {}):
        given = " ".join(f"{name}={','.join(map(str, dims))}" for name, dims in overrides.items())
        raise ModelImportError(f"{where}: --input-shape {given}: the shapes do not fit together "
                               f"(ONNX shape inference: {reason})")


def _strict_inference_error(proto: onnx.ModelProto, fixed: dict) -> str | None:
    """The first error of strict ONNX shape inference with the inputs in ``fixed`` made static, or None."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.value_info[:]  # the exporter's annotations hold the old sizes
    for out in probe.graph.output:
        out.type.tensor_type.ClearField("shape")
    for inp in probe.graph.input:
        if inp.name in fixed:
            dims = inp.type.tensor_type.shape.dim
            del dims[:]
            for d in fixed[inp.name]:
                dims.add().dim_value = d
    try:
        onnx.shape_inference.infer_shapes(probe, check_type=True, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as err:
        text = str(err).replace("[ShapeInferenceError] Inference error(s): ", "").strip()
        return text.splitlines()[0] if text else type(err).__name__
    except Exception:  # noqa: BLE001 - e.g. a model over protobuf's 2 GB: no check rather than no build
        return None
    return None


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
