"""TVM's ONNX importer, with each gather call labelled by the ONNX node it came from.

TVM's importer keeps no node names; an index error (``CheckIndices``) should say
which node read out of range. This importer differs from TVM's only in
``_convert_operator``: the Relax call a Gather, GatherElements, GatherND,
ScatterElements or ScatterND node becomes carries ``"<op> node '<name>'"`` and the
ONNX name of its indices in its span, where
:func:`onnx_label` reads them back (for
:mod:`fluidml_tvm.analysis.gather_indices`).
"""

from __future__ import annotations

import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

ONNX_GATHERS = ("Gather", "GatherElements", "GatherND", "ScatterElements", "ScatterND")
# The Relax ops that read or write at positions their indices give, unchecked.
GATHER_OPS = ("relax.take", "relax.gather_elements", "relax.gather_nd", "relax.scatter_elements", "relax.scatter_nd")
# The span of a labelled call names this source: prefix, node label, separator, the indices' ONNX name.
ONNX_LABEL_PREFIX = "onnx:"
_SEP = "\n"  # between the node label and the indices' name (neither holds a newline)


def from_onnx(model: onnx.ModelProto, shape_dict: dict, *, keep_params_in_input: bool = False) -> tvm.IRModule:
    """``tvm.relax.frontend.onnx.from_onnx`` (the model's own opset, float32 defaults), gathers labelled."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    importer = _LabellingImporter(shape_dict, "float32", keep_params_in_input=keep_params_in_input, sanitize=True)
    return importer.from_onnx(model.graph, opset)


def onnx_span(label: str, indices: str) -> tvm.ir.Span:
    """A span recording the ONNX node (``label``) and the ONNX name of its indices."""
    return tvm.ir.Span(tvm.ir.SourceName(f"{ONNX_LABEL_PREFIX}{label}{_SEP}{indices}"), 0, 0, 0, 0)


def onnx_label(call: relax.Call) -> tuple:
    """``(node label, indices tensor name)`` of the ONNX node a call was imported from, or Nones."""
    span = call.span
    if span is None or span.source_name is None:
        return None, None
    text = str(span.source_name.name)
    if not text.startswith(ONNX_LABEL_PREFIX) or _SEP not in text:
        return None, None
    label, indices = text[len(ONNX_LABEL_PREFIX):].split(_SEP, 1)
    return label, indices or None


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
