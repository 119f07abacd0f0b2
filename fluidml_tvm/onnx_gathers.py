"""TVM's ONNX importer, with each gather call labelled by the ONNX node it came from.

TVM's importer keeps no node names; an index error (``CheckIndices``) should say
which node read out of range. This importer differs from TVM's only in
``_convert_operator``: the Relax call a Gather, GatherElements, GatherND,
ScatterElements or ScatterND node becomes carries ``"<op> node '<name>'"`` and the
ONNX name of its indices in its span, where
:func:`fluidml_tvm.analysis.gather_indices.onnx_label` reads them back.
"""

from __future__ import annotations

import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

from .analysis.gather_indices import GATHER_OPS, onnx_span

ONNX_GATHERS = ("Gather", "GatherElements", "GatherND", "ScatterElements", "ScatterND")


def from_onnx(model: onnx.ModelProto, shape_dict: dict, *, keep_params_in_input: bool = False) -> tvm.IRModule:
    """``tvm.relax.frontend.onnx.from_onnx`` (the model's own opset, float32 defaults), gathers labelled."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    importer = _LabellingImporter(shape_dict, "float32", keep_params_in_input=keep_params_in_input, sanitize=True)
    return importer.from_onnx(model.graph, opset)


class _LabellingImporter(ONNXGraphImporter):
    _node = None  # the node being converted

    def _parse_value_proto(self, value_proto):
        # TVM's _construct_nodes calls this on each node just before converting it.
        if isinstance(value_proto, onnx.NodeProto):
            self._node = value_proto
        return super()._parse_value_proto(value_proto)

    def _convert_operator(self, op_name, inputs, attrs, opset):
        sym = super()._convert_operator(op_name, inputs, attrs, opset)
        if (op_name in ONNX_GATHERS and isinstance(sym, relax.Call) and isinstance(sym.op, tvm.ir.Op)
                and sym.op.name in GATHER_OPS):
            node = self._node if self._node is not None and self._node.op_type == op_name else None
            name = attrs["tvm_custom"]["name"]
            # an unnamed node is named by its output
            label = (f"{op_name} node '{name}'" if name
                     else f"{op_name} node (unnamed) writing '{node.output[0] if node else '?'}'")
            indices = node.input[1] if node is not None and len(node.input) > 1 else ""
            sym = self.bb.normalize(relax.Call(sym.op, sym.args, sym.attrs, sym.ty_args, onnx_span(label, indices)))
        return sym
