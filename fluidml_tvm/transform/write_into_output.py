"""WriteIntoOutput: drop reshape copies into returned tensors."""

from __future__ import annotations

import tvm
from tvm import relax

from ..analysis.liveness import function_liveness
from ..analysis.output_copies import reshape_copies_into_outputs
from ..rewrite.module import with_functions
from ..rewrite.write_into_output import write_into_outputs


@tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.WriteIntoOutput")
class WriteIntoOutput:
    """Where a kernel only reshapes an intermediate into the returned tensor, the
    intermediate becomes a view of the returned tensor and the copy goes.

    Runs on destination-passing form (after CallTIRRewrite), before PlanMemory.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updates = {}
        for gv, func in mod.functions.items():
            if isinstance(func, relax.Function):
                liveness = function_liveness(func, mod)
                copies = reshape_copies_into_outputs(mod, liveness)
                if copies:
                    updates[gv] = write_into_outputs(func, liveness, copies)
        return with_functions(mod, updates)
