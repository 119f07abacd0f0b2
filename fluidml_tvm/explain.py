"""What fluidml-tvm did to a model: TVM's default build and fluidml-tvm's, side by side.

Both builds start from the same imported module. TVM's is its default
pipeline (:func:`~fluidml_tvm.pipeline.tvm_default_stages`), its memory read
after StaticPlanBlockMemory; fluidml-tvm's is :func:`fluidml_tvm.export`.
Both are exported as artifacts and, when the target runs on this machine,
profiled by :func:`~fluidml_tvm.runtime.profile.profile` on the same inputs.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm import relax

from .artifact import prepare_deploy, write_artifact
from .compiler import StageClock, export
from .frontend import onnx_to_relax, random_tensors
from .options import BuildOptions
from .pipeline import tvm_default_stages
from .report import DefaultBuildPlan, FunctionReport, default_build_plan
from .runtime import load
from .runtime.profile import Profile, profile
from .targets import describe


@dataclass
class BuildComparison:
    """The two builds of one model's ``main``: plans, profiles (None when not run here) and weight bytes."""

    model: str
    target: str
    command: str
    fluidml: FunctionReport
    tvm: DefaultBuildPlan
    fluidml_profile: Profile | None
    tvm_profile: Profile | None
    fluidml_weight_bytes: int
    tvm_weight_bytes: int
    not_profiled: str = ""  # why there are no profiles


def compare_builds(model, target="host", options: BuildOptions | None = None, *, input_shapes: dict | None = None,
                   runs: int = 10, progress=None, command: str | None = None,
                   built: tuple | None = None) -> BuildComparison:
    """Build ``model`` (an ONNX path) both ways for ``target`` and profile both where they run.

    ``built``: ``(artifact directory, ArtifactInfo, MemoryReport)`` of the
    fluidml build already made with these options (:func:`fluidml_tvm.export`).
    ``progress(stage, seconds)`` as for :func:`fluidml_tvm.compile`; the
    stages here are the fluidml build's, then ``tvm build`` and ``profile``.
    """
    target = describe(target)
    options = BuildOptions.of(options)
    runs_here = target.cpu and target.linker is None
    with tempfile.TemporaryDirectory(prefix="fluidml-report-") as tmp:
        ours = Path(tmp) / "fluidml"
        if built is None:
            info, report = export(model, ours, target, options, input_shapes=input_shapes,
                                  fcompile=target.cross_compiler, progress=progress)
        else:
            ours, info, report = built
        clock = StageClock(progress)
        tvm_plan, tvm_info = _tvm_default_build(model, target, input_shapes, Path(tmp) / "tvm")
        clock.lap("tvm build")
        profiles, why = (None, None), ""
        if not runs_here:
            why = f"the {target.target.kind.name} target does not run on this machine (time it on the device: " \
                  "fluidml-tvm bench --rpc-tracker)"
        else:
            profiles = tuple(_profile(d, runs) for d in (ours, Path(tmp) / "tvm"))
            clock.lap("profile")
    return BuildComparison(
        model=str(model), target=str(target.target), command=command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        fluidml=report["main"], tvm=tvm_plan, fluidml_profile=profiles[0], tvm_profile=profiles[1],
        fluidml_weight_bytes=sum(w.nbytes for w in info.weights), tvm_weight_bytes=sum(w.nbytes for w in tvm_info.weights),
        not_profiled=why)


def _tvm_default_build(model, target, input_shapes, directory: Path):
    """TVM's plan of ``main`` and its artifact, from its default pipeline (the plan read from the very
    module the artifact is compiled from, so that kernel names match its profile)."""
    parts = tvm_default_stages(target)
    mod, params = onnx_to_relax(model, input_shape_overrides=input_shapes, keep_params_in_input=True)
    deployable = prepare_deploy(mod, params.get("main", []), target.target)
    with target.target:
        lowered = tvm.transform.Sequential(parts["lower"])(deployable.module)
        executable = tvm.compile(lowered, target.target, relax_pipeline=tvm.transform.Sequential(parts["finalize"]))
    info = write_artifact(deployable, executable, directory, target.cross_compiler)
    return default_build_plan(relax.transform.StaticPlanBlockMemory()(lowered)), info


def _profile(directory: Path, runs: int) -> Profile:
    """The profile of an artifact on random inputs of its shapes (the same seed, so the same for both builds)."""
    with load(directory) as model:
        inputs = random_tensors([(s.name, s.shape, s.dtype) for s in model.manifest.inputs])
        return profile(model, list(inputs.values()), runs)
