"""Bad input: a clear error naming the file, node or op, never a deep TVM traceback alone."""

import onnx
import pytest
from onnx import TensorProto, helper

import fluidml_tvm
from fluidml_tvm.frontend import ModelImportError, onnx_to_relax, parse_input_shapes
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


def two_inputs(a_dims, m_dims):
    """``y = a + m``: the two inputs' shapes are tied by the Add."""
    node = helper.make_node("Add", ["a", "m"], ["y"], name="add")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a_dims)),
                                            helper.make_tensor_value_info("m", TensorProto.FLOAT, list(m_dims))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(a_dims))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_input_shape_for_an_input_the_model_lacks_names_the_inputs():
    with pytest.raises(ModelImportError,
                       match=r"--input-shape ids=\.\.\.: the model has no input 'ids' \(its inputs: a, m\)"):
        onnx_to_relax(two_inputs(("b", 4), ("b", 4)), input_shape_overrides={"a": [1, 4], "m": [1, 4], "ids": [1, 4]})


@pytest.mark.parametrize("shape, message", [
    ([2, 4, 1], r"--input-shape x=2,4,1: input 'x' has rank 2 \(dimensions \['batch', 4\]\), not 3"),
    ([2], r"input 'x' has rank 2"),
    ([2, 8], r"--input-shape x=2,8: dimension 1 of input 'x' is static, 4"),
    ([-1, 4], r"--input-shape x=-1,4: dimensions must be positive integers"),
    ([0, 4], r"dimensions must be positive integers"),
])
def test_input_shape_only_sets_symbolic_dimensions(shape, message):
    with pytest.raises(ModelImportError, match=message):
        onnx_to_relax(tiny(dims=("batch", 4)), input_shape_overrides={"x": shape})


def test_static_input_cannot_be_reshaped():
    # As ONNX Runtime: a static 1x4 input takes 1x4 only (MiniLM's 1x128 mask given 1x64 built and ran).
    with pytest.raises(ModelImportError, match=r"dimension 1 of input 'x' is static, 4"):
        onnx_to_relax(tiny(dims=(1, 4)), input_shape_overrides={"x": [1, 2]})
    mod, _ = onnx_to_relax(tiny(dims=(1, 4)), input_shape_overrides={"x": [1, 4]})  # the same shape is fine
    assert "R.Tensor((1, 4)" in mod["main"].script()


def test_tied_dimensions_must_agree():
    model = two_inputs(("batch", "seq"), ("batch", "seq"))
    with pytest.raises(ModelImportError, match=r"--input-shape m=1,64: dimension 'seq' is 64 here but 128 in "
                                               r"input 'a'"):
        onnx_to_relax(model, input_shape_overrides={"a": [1, 128], "m": [1, 64]})
    mod, _ = onnx_to_relax(model, input_shape_overrides={"a": [1, 128], "m": [1, 128]})
    assert "R.Tensor((1, 128)" in mod["main"].script()


@pytest.mark.parametrize("item", ["input_ids=1x128", "input_ids=1,-1", "input_ids=1,0", "=1,128", "input_ids",
                                  "input_ids=", "input_ids=1,,2"])
def test_parse_input_shapes_names_the_flag_and_the_form(item):
    with pytest.raises(ValueError, match=rf"--input-shape '{item}': expected NAME=D0,D1,\.\.\. with positive integer"):
        parse_input_shapes([item])


def test_parse_input_shapes():
    assert parse_input_shapes(["input_ids=1,128", "mask=1,128"]) == {"input_ids": [1, 128], "mask": [1, 128]}
    assert parse_input_shapes([]) is None
    with pytest.raises(ValueError, match="input 'a' is given twice"):
        parse_input_shapes(["a=1", "a=2"])


def test_shapes_that_do_not_fit_together_are_named():
    # Differently named symbolic dims that the Add ties: the names alone cannot tell.
    model = two_inputs(("b", "s"), ("b", "t"))
    with pytest.raises(ModelImportError, match=r"--input-shape a=1,128 m=1,64: the shapes do not fit together "
                                               r"\(ONNX shape inference: \(op_type:Add, node name: add\).*Incompatible"):
        onnx_to_relax(model, input_shape_overrides={"a": [1, 128], "m": [1, 64]})
    onnx_to_relax(model, input_shape_overrides={"a": [1, 64], "m": [1, 64]})
