"""Build a deployable artifact: the compiled library beside its weights in their final layouts.

An artifact is a directory::

    model.so       the compiled Relax VM executable (``main(inputs..., weights...)``)
    model.cl       for an OpenCL target, the kernels' OpenCL C source (also inside model.so)
    weights.bin    the weights after ``main_transform_params``, raw, 64-byte aligned
                   (format in :mod:`fluidml_tvm.runtime.weights`)
    manifest.json  inputs (name, shape, dtype), weight table (name, shape, dtype, offset,
                   nbytes), the build fingerprint, the target and the file names

The fingerprint (:func:`fluidml_tvm.runtime.manifest.fingerprint`: the compiled graph's
structural hash, the target, the inputs and the weight table with each weight's crc32) is
stamped into all three files (in the library as the Relax function ``fluidml_fingerprint``),
and the manifest holds the library's sha256, so files from two builds are never mixed.
:func:`fluidml_tvm.runtime.load` reads the directory without importing ``tvm``.

Every file is written under a temporary name and renamed into place, the manifest last: an
existing artifact is replaced file by file, and a process serving the old one keeps its
files (it holds their old inodes); a loader that meets a half-replaced directory sees files
that disagree with the manifest and refuses them.

With ``embed_weights=True`` there is no ``weights.bin``: the weights are bound as
constants in ``model.so`` (one file for code and weights, loadable by stock TVM). That
costs memory: loading reads the serialized constants and deserializes them into new
tensors, while the library's own copy stays mapped. Measured on all-MiniLM-L6-v2 (86 MB
of weights) with the lean runtime: +343 MB peak during load (4x the weights), +172 MB
after it (2x); the external form adds only the weight pages a run reads (+41 MB: most
of the embedding table is never touched), at most 1x.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, tirx

from .analysis.shared_weights import transposed_shared_params
from .runtime.files import open_regular, replaced_atomically, sha256_of
from .runtime.manifest import (
    FINGERPRINT_FUNCTION,
    LIBRARY_FILE,
    WEIGHTS_FILE,
    Manifest,
    TensorSpec,
    fingerprint,
)
from .runtime.weights import layout_weights, write_weights
from .targets import resolve_target


@dataclass
class ArtifactInfo:
    """What :func:`export_artifact` wrote, plus the in-process build for comparisons."""

    directory: Path
    manifest: Manifest
    executable: tvm.runtime.Executable
    weights: list[np.ndarray]  # final weights, in the order main takes them after the inputs


@dataclass
class Deployable:
    """A module ready to compile for an artifact: weight transforms run, ``main`` taking the final
    weights (or bound to them), stamped with its fingerprint."""

    module: tvm.IRModule
    target: tvm.target.Target
    weights: list[np.ndarray]
    entries: list  # the weight table of the manifest
    size: int  # bytes of weights.bin
    graph: str  # structural hash of ``module`` before compilation
    inputs: tuple
    stamp: str
    embed_weights: bool


def export_artifact(
    mod: tvm.IRModule,
    params: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    target: str | dict | tvm.target.Target,
    path: str | Path,
    relax_pipeline: tvm.transform.Pass | None = None,
    embed_weights: bool = False,
    fcompile: Callable | None = None,
) -> ArtifactInfo:
    """Compile ``mod`` for ``target`` and write the artifact directory ``path``.

    Parameters
    ----------
    mod, params, embed_weights
        As for :func:`prepare_deploy`.
    relax_pipeline
        Compiles ``main``; default ``relax.get_default_pipeline(target)``.
    fcompile
        Linker for ``export_library``, e.g. ``tvm.support.cc.cross_compiler(
        "aarch64-linux-gnu-gcc")`` for an aarch64 target.
    """
    check_artifact_path(path)  # before the build, not after it
    deployable = prepare_deploy(mod, params, target, embed_weights)
    pipeline = relax_pipeline or relax.get_default_pipeline(deployable.target)
    executable = tvm.compile(deployable.module, deployable.target, relax_pipeline=pipeline)
    return write_artifact(deployable, executable, path, fcompile)


def prepare_deploy(
    mod: tvm.IRModule,
    params: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    target: str | dict | tvm.target.Target,
    embed_weights: bool = False,
) -> Deployable:
    """Run ``mod``'s weight transforms once, here, and stamp what is left with its fingerprint.

    Parameters
    ----------
    mod
        An IRModule whose ``main`` takes ``(inputs..., params...)`` and has the attribute
        ``num_input``, as ``from_onnx(model, keep_params_in_input=True)`` makes it. Passes
        that re-lay weights out must already have run: weight-only computation in ``main``
        is lifted out and executed here, once, at build time.
    params
        The weights: a list in ``main``'s parameter order (``detach_params(mod)[1]["main"]``)
        or a dict keyed by parameter name.
    embed_weights
        Bind the weights as constants in the library instead of writing ``weights.bin``.
    """
    target = resolve_target(target)
    num_input = int(mod["main"].attrs["num_input"])
    arrays = _ordered_params(mod["main"].params[num_input:], params)

    if transposed_shared_params(mod["main"], num_input):
        # Read the shared weight transposed inside the matmul, so nothing lifts a
        # transposed copy and the weight is stored once.
        mod = relax.transform.FuseTransposeMatmul()(mod)
    lifted = relax.transform.LiftTransformParams()(mod)
    weights = _run_transform_params(lifted, arrays)
    main = lifted["main"]
    entries, size = layout_weights(
        [(v.name, w) for v, w in zip(main.params[num_input:], weights, strict=True)]
    )
    deploy = tvm.IRModule(
        {gv: f for gv, f in lifted.functions.items() if gv.name_hint != "main_transform_params"},
        attrs=lifted.attrs,
    )
    if embed_weights:
        bindings = {v: tvm.runtime.tensor(w) for v, w in zip(main.params[num_input:], weights)}
        deploy = relax.transform.BindParams("main", bindings)(deploy)
    # The module compiled (with embedded weights, another module than without).
    graph = f"{tvm_ffi.structural_hash(deploy) & (2**64 - 1):016x}"
    inputs = tuple(_spec(v) for v in main.params[:num_input])
    stamp = fingerprint(graph, str(target), inputs, entries)
    deploy[FINGERPRINT_FUNCTION] = _constant_function(FINGERPRINT_FUNCTION, stamp)
    return Deployable(deploy, target, weights, entries, size, graph, inputs, stamp, embed_weights)


def write_artifact(deployable: Deployable, executable, path: str | Path,
                   fcompile: Callable | None = None) -> ArtifactInfo:
    """Write ``executable`` (compiled from ``deployable.module``) and its weights as the artifact ``path``."""
    directory = check_artifact_path(path)
    d = deployable
    directory.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(directory / LIBRARY_FILE) as temp:
        executable.export_library(str(temp), fcompile=fcompile)
        fd, info = open_regular(temp, "library")
        try:
            library_sha256 = sha256_of(fd, info.st_size)  # of the bytes renamed into place
        finally:
            os.close(fd)
    write_device_source(executable, directory / LIBRARY_FILE)
    if not d.embed_weights:
        write_weights(directory / WEIGHTS_FILE, d.entries, d.weights, d.stamp, d.size)
    manifest = Manifest(
        fingerprint=d.stamp,
        graph=d.graph,
        target=str(d.target),
        library=LIBRARY_FILE,
        library_sha256=library_sha256,
        inputs=d.inputs,
        weights=tuple(d.entries),
        weights_file=None if d.embed_weights else WEIGHTS_FILE,
        weights_bytes=0 if d.embed_weights else d.size,
    )
    manifest.save(directory)  # last: until now the directory held the old manifest
    if d.embed_weights:
        (directory / WEIGHTS_FILE).unlink(missing_ok=True)  # a stale one from an earlier export
    return ArtifactInfo(directory, manifest, executable, d.weights)


def check_artifact_path(path: str | Path) -> Path:
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"artifact path {directory} exists and is not a directory")
    return directory


# The file suffix of each device code kind whose source is written beside a library.
DEVICE_SOURCE_SUFFIX = {"opencl": ".cl"}


def write_device_source(executable, library: str | Path) -> Path | None:
    """Write the device kernels' source (OpenCL C) beside ``library`` (``model.so`` -> ``model.cl``).

    The library embeds it too; the copy is for reading and for a board's
    toolchain.  Returns the file written, or None for a CPU-only build.
    """
    stack = [executable.mod]
    while stack:
        module = stack.pop()
        if module.kind in DEVICE_SOURCE_SUFFIX:
            path = Path(library).with_suffix(DEVICE_SOURCE_SUFFIX[module.kind])
            path.write_text(module.inspect_source())
            return path
        stack.extend(module.imports)
    return None


def _ordered_params(
    param_vars: Sequence[relax.Var], params: Mapping[str, np.ndarray] | Sequence[np.ndarray]
) -> list[np.ndarray]:
    if isinstance(params, Mapping):
        params = [params[v.name] for v in param_vars]
    if len(params) != len(param_vars):
        raise ValueError(f"main takes {len(param_vars)} params, got {len(params)}")
    return [p.numpy() if hasattr(p, "numpy") else np.asarray(p) for p in params]


def _run_transform_params(lifted: tvm.IRModule, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Execute the lifted weight transform on the build machine (always the host CPU)."""
    host = tvm.target.Target("llvm")
    # with the kernels it may call (a gather's index check on weight-only indices is lifted too)
    module = tvm.IRModule({gv: f for gv, f in lifted.functions.items()
                           if gv.name_hint == "main_transform_params" or isinstance(f, tirx.PrimFunc)})
    executable = tvm.compile(module, host, relax_pipeline=relax.get_default_pipeline(host))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    outputs = vm["main_transform_params"]([tvm.runtime.tensor(a) for a in arrays])
    return [t.numpy() for t in outputs]


def _constant_function(name: str, value: str) -> relax.Function:
    """A Relax function taking nothing and returning the string ``value``."""
    func = relax.Function([], relax.SeqExpr([], tvm.ir.StringImm(value)), relax.ObjectType())
    return func.with_attr("global_symbol", name)


def _spec(var: relax.Var) -> TensorSpec:
    # Symbolic dimensions are recorded as -1 (any size).
    shape = tuple(int(d) if isinstance(d, tvm.tirx.IntImm) else -1 for d in var.ty.shape.values)
    return TensorSpec(var.name, shape, str(var.ty.dtype))
