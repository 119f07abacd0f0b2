"""``fluidml-tvm report``: the page comparing TVM's default build with fluidml-tvm's, through the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import tvm
from tvm import relax

from fluidml_tvm.example_model import build_example_model
from fluidml_tvm.frontend import onnx_to_relax
from fluidml_tvm.frontend.onnx_labels import node_var_name
from fluidml_tvm.transform import NameFusedCalls

from conftest import zoo_model

ROOT = Path(__file__).resolve().parents[1]


def _onnx_names(path) -> set:
    """What a value may be named after: an ONNX node's name, or an unnamed node's output."""
    graph = onnx.load(str(path)).graph
    return {node_var_name(n) for node in graph.node for n in [node.name, *node.output] if n}


@pytest.mark.parametrize("name", ["gpt2-tiny", "mobilenetv2"])
def test_report_page_shows_both_plans_on_one_scale_labelled_by_onnx_node(name, tmp_path):
    model = zoo_model(name)
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "fluidml_tvm.cli", "report", str(model), "-o", str(out),
                           "--runs", "3", "--solve-seconds", "0.5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {out / 'index.html'}" in proc.stdout
    page = (out / "index.html").read_text()
    data = json.loads((out / "report.json").read_text())
    figures = data["figures"]
    assert set(figures) == {"plans.png", "live_bytes.png", "kernels.png"}
    for figure in figures:  # every figure is on the page and is a PNG
        assert f"<img src='{figure}'" in page
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # One rectangle per planned tensor, in each build's panel; both panels on one scale.
    panels = figures["plans.png"]["panels"]
    assert panels["fluidml"]["rectangles"] == len(data["fluidml"]["tensors"]) > 0
    assert panels["tvm"]["rectangles"] == len(data["tvm"]["tensors"]) > 0
    # TVM's plan is one allocation per storage: each storage drawn as a band, its tensors inside it
    assert panels["tvm"]["bands"] == len(data["tvm"]["storages"]) > 0 and panels["fluidml"]["bands"] == 0
    assert panels["fluidml"]["ylim_mib"] == panels["tvm"]["ylim_mib"]
    numbers = data["numbers"]
    top = max(numbers["tvm_storages_bytes"], numbers["fluidml_arena_bytes"]) / 2**20
    assert panels["tvm"]["ylim_mib"][1] >= top

    # Tensors and kernels are labelled by the ONNX nodes that compute them.
    onnx_names = _onnx_names(model)
    for panel in panels.values():
        assert panel["labels"] and set(panel["labels"]) <= onnx_names
    for build in ("fluidml", "tvm"):
        rows = figures["kernels.png"][build]["rows"]
        assert figures["kernels.png"][build]["bars"] == len(rows)
        assert [r["seconds"] for r in rows if not r["kernel"].startswith("(")] == sorted(
            (r["seconds"] for r in rows if not r["kernel"].startswith("(")), reverse=True)  # heaviest first
        named = [r["values"] for r in rows if r["values"]]
        assert len(named) >= 3 and {v for values in named for v in values} <= onnx_names

    # The figures table and the decisions, with the command that made the page.
    assert "report" in data["command"] and str(model) in data["command"]
    assert numbers["fluidml_total_bytes"] <= numbers["tvm_total_bytes"]
    assert numbers["fluidml_latency_seconds"] > 0 and numbers["tvm_latency_seconds"] > 0
    assert ("<h2>Weight layouts</h2>" in page) and ("<h2>Layout folds</h2>" in page)
    assert numbers["layouts_chosen"] == len(data["fluidml"]["layouts"]) > 0


def test_fused_calls_keep_the_onnx_node_names_of_their_values():
    mod, _ = onnx_to_relax(build_example_model())
    with tvm.target.Target("llvm"):
        legalized = tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                                              relax.transform.FoldConstant()])(mod)
        plain = relax.transform.FuseOps()(legalized)
        named = NameFusedCalls()(legalized)
    tvm.ir.assert_structural_equal(named, plain, map_free_vars=True)  # only names change

    def callees(m):
        return {b.var.name: b.value.op.name_hint for block in m["main"].body.blocks for b in block.bindings
                if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.GlobalVar)}

    # q, k and v share one fused function; each call is named after its own ONNX node
    calls = callees(named)
    assert calls["layer0_attn_q"] == calls["layer0_attn_k"] == calls["layer0_attn_v"]
    assert all(re.fullmatch(r"lv\d*", n) for n in callees(plain))  # FuseOps' own names are generated
    assert {"layer0_attn_q", "layer0_attn_scaled", "layer1_ffn_res"} <= set(calls)


def test_import_names_values_after_their_onnx_nodes():
    mod, _ = onnx_to_relax(build_example_model())
    names = [b.var.name for block in mod["main"].body.blocks for b in block.bindings]
    # a converter that binds its result itself (LayerNormalization) is named too
    assert {"embeddings_tokens", "embeddings_ln", "layer0_attn_q_matmul", "layer1_ffn_res"} <= set(names)
