"""Bad input: a clear error naming the file, node or op, never a deep TVM traceback alone."""

import onnx
import pytest
from onnx import TensorProto, helper

import fluidml_tvm
from fluidml_tvm.frontend import ModelImportError, onnx_to_relax
from fluidml_tvm.targets import UnknownTargetError


def tiny(op="Relu", dims=(1, 4), domain=""):
    node = helper.make_node(op, ["x"], ["y"], name="the_node", domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def test_missing_file(tmp_path):
    with pytest.raises(ModelImportError, match="no such ONNX file"):
        onnx_to_relax(tmp_path / "nope.onnx")


def test_malformed_file_is_named(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07 this is not protobuf \xff\xff")
    with pytest.raises(ModelImportError, match="broken.onnx"):
        onnx_to_relax(bad)


def test_unsupported_op_names_node_and_op(tmp_path):
    path = tmp_path / "custom.onnx"
    onnx.save(tiny("FancyOp", domain="com.example"), str(path))
    with pytest.raises(ModelImportError, match=r"node 'the_node' \(com\.example\.FancyOp\)"):
        onnx_to_relax(path)


def test_symbolic_input_needs_a_shape_and_then_builds():
    model = tiny(dims=("batch", 4))
    with pytest.raises(ModelImportError, match=r"input 'x' has no static shape.*batch"):
        onnx_to_relax(model)
    mod, _ = onnx_to_relax(model, input_shape_overrides={"x": [2, 4]})
    assert "R.Tensor((2, 4)" in mod["main"].script()


def test_invalid_graph_is_reported_by_the_checker():
    model = tiny()
    model.graph.node[0].input[0] = "undefined_tensor"
    with pytest.raises(ModelImportError, match="invalid ONNX model"):
        onnx_to_relax(model)


def test_unknown_target():
    with pytest.raises(UnknownTargetError, match="unknown target 'potato'.*preset"):
        fluidml_tvm.compile(tiny(), "potato")
