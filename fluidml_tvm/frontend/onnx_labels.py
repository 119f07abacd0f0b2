"""TVM's ONNX importer, with each call labelled by the ONNX node it came from.

TVM's importer keeps no node names, yet an index error (``CheckIndices``) should
say which node read out of range, and the report names each tensor after the
node that made it. This importer differs from TVM's only in ``_convert_operator``:
the Relax call a node becomes carries ``"<op> node '<name>'"`` (and, for Gather,
GatherElements, GatherND, ScatterElements and ScatterND, the ONNX name of the
indices) in its span, where :func:`onnx_label` reads them back. The variable
each call is bound to is then named after the node (:func:`node_var_name`):
unlike spans, variable names survive legalization, fusion (a fused call keeps
the variable of its group's last op) and lowering.
"""

from __future__ import annotations

import re

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
    """``tvm.relax.frontend.onnx.from_onnx`` (the model's own opset, float32 defaults), each value named
    after the ONNX node that computes it, its call labelled with the node."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    importer = _LabellingImporter(shape_dict, "float32", keep_params_in_input=keep_params_in_input, sanitize=True)
    mod = importer.from_onnx(model.graph, opset)
    return rename_bindings(mod, lambda b: _node_var_name(b) or importer.bound_names.get(b.var))


_GENERATED = re.compile(r"(lv|gv)\d*(_\d+)?")  # the names TVM's block builder makes up


def is_generated(name: str) -> bool:
    """Whether ``name`` is one TVM's block builder made up (``lv12``, ``gv``), not a node's."""
    return _GENERATED.fullmatch(name) is not None


def node_var_name(node_name: str) -> str:
    """The Relax variable name for ONNX node ``node_name``: ``/h.0/attn/MatMul`` -> ``h_0_attn_MatMul``."""
    return re.sub(r"[^0-9A-Za-z_]+", "_", node_name).strip("_") or "node"


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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # variables a converter bound itself (its result was a variable or a tuple of them) -> name
        self.bound_names: dict = {}

    def _parse_value_proto(self, value_proto):
        # TVM's _construct_nodes calls this on each node just before converting it.
        if isinstance(value_proto, onnx.NodeProto):
            self._node = value_proto
        return super()._parse_value_proto(value_proto)

    def _convert_operator(self, op_name, inputs, attrs, opset):
        sym = super()._convert_operator(op_name, inputs, attrs, opset)
        node = self._node if self._node is not None and self._node.op_type == op_name else None
        name = attrs["tvm_custom"]["name"]
        if isinstance(sym, (relax.Var, relax.Tuple)):
            # the converter bound its result itself (e.g. LayerNormalization's optional outputs):
            # name each variable after the node's output; one passed through keeps its first name
            fields = [sym] if isinstance(sym, relax.Var) else list(sym.fields)
            outputs = list(node.output) if node is not None else []
            for i, field in enumerate(fields):
                if isinstance(field, relax.Var) and field not in self.bound_names and i < len(outputs):
                    self.bound_names[field] = node_var_name(name if i == 0 and name else outputs[i])
            return sym
        if not isinstance(sym, relax.Call) or (sym.span is not None and sym.span.source_name is not None):
            return sym  # a value passed through, or an input's own call
        # an unnamed node is named by its output
        label = (f"{op_name} node '{name}'" if name
                 else f"{op_name} node (unnamed) writing '{node.output[0] if node else '?'}'")
        gather = op_name in ONNX_GATHERS and isinstance(sym.op, tvm.ir.Op) and sym.op.name in GATHER_OPS
        indices = node.input[1] if gather and node is not None and len(node.input) > 1 else ""
        return self.bb.normalize(relax.Call(sym.op, sym.args, sym.attrs, sym.ty_args, onnx_span(label, indices)))


def rename_bindings(mod: tvm.IRModule, name_of) -> tvm.IRModule:
    """``mod`` with the variable of each binding ``b`` for which ``name_of(b)`` is a str renamed to it."""
    return _RenameBindings(mod, name_of).transform(mod)


def _node_var_name(binding) -> str | None:
    value = binding.value
    label = onnx_label(value)[0] if isinstance(value, relax.Call) else None
    node = re.search(r"'(.*)'$", label or "")  # the node's name, or an unnamed node's output
    return node_var_name(node.group(1)) if node else None


@relax.expr_functor.mutator
class _RenameBindings(relax.PyExprMutator):
    def __init__(self, mod, name_of):
        super().__init__(mod)  # the builder starts from ``mod``: its other functions are kept
        self.name_of = name_of

    def transform(self, mod: tvm.IRModule) -> tvm.IRModule:
        for gv, func in mod.functions.items():
            if isinstance(func, relax.Function):
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get()

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = self.visit_expr(binding.value)
        name = self.name_of(binding)
        if name is None or name == binding.var.name:
            self.builder_.emit_normalized(relax.VarBinding(binding.var, value))
            return
        cls = relax.DataflowVar if isinstance(binding.var, relax.DataflowVar) else relax.Var
        var = cls(name, binding.var.ty)
        self.builder_.emit_normalized(relax.VarBinding(var, value))
        self.set_var_remap(binding.var, var)
