"""In-place proofs on TVM's own kernels (LegalizeOps): which outputs may take an input's memory.

The expectations are read off each kernel by hand: a pointwise add may write over its
full-shape operand (not the broadcast bias); softmax reads its input in its first two
nests (max, exp) and writes its output in the last, pointwise, so its output may take the
input; flip, matmul and transpose read other elements than they write.
"""

import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from fluidml_tvm.analysis.inplace import inplace_merges
from fluidml_tvm.analysis.liveness import function_liveness
from fluidml_tvm.analysis.nests import SLOTS, kernel_nests
from fluidml_tvm.analysis.pointwise import inplace_pairs


@I.ir_module
class Chain:
    @R.function
    def main(x: R.Tensor((8, 16), "float32"), b: R.Tensor((16,), "float32"), w: R.Tensor((16, 16), "float32")):
        with R.dataflow():
            a = R.add(x, b)
            s = R.nn.softmax(a, axis=-1)
            f = R.flip(s, axis=1)
            m = R.matmul(f, w)
            n = R.add(m, b)
            t = R.permute_dims(n, [1, 0])
            y = R.exp(t)
            R.output(y)
        return y


def _legalized() -> tvm.IRModule:
    with tvm.target.Target("llvm"):
        return relax.transform.LegalizeOps()(Chain)


def _kernels() -> dict:
    return {gv.name_hint: f for gv, f in _legalized().functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def test_pointwise_pairs_of_each_kernel():
    pairs = {name: set(inplace_pairs(f)) for name, f in _kernels().items()}
    assert pairs == {
        "add": {(0, 2)},  # both adds (one kernel): the left operand -> out; b (index 1) is broadcast
        "softmax": {(0, 1)},
        "flip": set(),
        "matmul": set(),
        "transpose": set(),
        "tir_exp": {(0, 1)},
    }


def test_softmax_nests_bound_where_its_buffers_live():
    softmax = _kernels()["softmax"]
    nests = kernel_nests(softmax)
    spans = {buf.name: span for buf, span in nests.spans.items()}
    assert nests.nest == (0, 1, 2, 3)  # max, exp, sum, normalize: four nests run one after another
    assert spans["a"] == (0, 1)  # the input dies after exp's nest ...
    assert spans["T_softmax_norm"] == (3, 3)  # ... and the output is born in the last
    assert kernel_nests(_kernels()["matmul"]).nest == (0,)


def test_merges_follow_the_pairs_and_the_lifetimes():
    with tvm.target.Target("llvm"):
        lowered = tvm.transform.Sequential([relax.transform.ToNonDataflow(), relax.transform.RemovePurityChecking(),
                                            relax.transform.CallTIRRewrite()])(_legalized())
    live = function_liveness(lowered["main"], lowered)
    by_value = {live.values[n]: n for n in live.allocs}  # tensor of each Relax value
    candidates = {n: a for n, a in live.allocs.items() if n not in live.escaping}
    merges = inplace_merges(lowered, live, candidates)
    # m -> n: add's one nest reads m for the last time and writes n. Not a -> s: softmax reads a
    # last in its second nest and writes s in its fourth, so they never live together (no merge
    # needed). Not t -> y: y is returned, not planned.
    assert merges == [(by_value["m"], by_value["n"])]
    m_end, n_start = live.lifetimes[by_value["m"]][1], live.lifetimes[by_value["n"]][0]
    assert m_end == n_start
    a_end, s_start = live.lifetimes[by_value["a"]][1], live.lifetimes[by_value["s"]][0]
    assert (a_end % SLOTS, s_start % SLOTS) == (1, 3) and s_start // SLOTS == a_end // SLOTS
