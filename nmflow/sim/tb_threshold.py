"""cocotb testbench of the threshold/activation unit (:class:`~nmflow.rtl.threshold.ThresholdUnit`).

Environment: ``NMFLOW_TB_ACCBITS``, ``NMFLOW_TB_SEED``. For many threshold pairs (equal, adjacent,
wide, at the ends of the range) it drives every pre-activation at and around each threshold in
both modes and checks the activation with ``==`` against :func:`nmflow.golden.reference.activate`.
"""

import os
from types import SimpleNamespace

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from nmflow.golden.reference import activate
from nmflow.rtl.threshold import ThresholdUnit
from nmflow.sim.payload import pack, unpack
from nmflow.sim.tbutil import start


def cases(acc_bits, rng):
    lo_end, hi_end = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    pairs = [(0, 0), (-1, 0), (0, 1), (-5, 5), (3, 3), (lo_end + 2, hi_end - 2), (lo_end, hi_end),
             (lo_end, lo_end), (hi_end, hi_end)]
    for _ in range(40):
        a, b = sorted(int(v) for v in rng.integers(lo_end, hi_end + 1, 2))
        pairs.append((a, b))
    out = []
    for t_lo, t_hi in pairs:
        accs = {lo_end, hi_end, 0}
        for t in (t_lo, t_hi):
            accs.update(range(t - 2, t + 3))
        for ternary in (0, 1):
            for acc in sorted(a for a in accs if lo_end <= a <= hi_end):
                out.append((acc, t_lo, t_hi, ternary))
    return out


@cocotb.test()
async def threshold_at_and_around_thresholds(dut):
    acc_bits = int(os.environ["NMFLOW_TB_ACCBITS"])
    rng = np.random.default_rng(int(os.environ.get("NMFLOW_TB_SEED", "0")))
    component = ThresholdUnit(acc_bits, 16)
    in_layout = component.signature.members["i"].signature.members["payload"].shape
    out_layout = component.signature.members["o"].signature.members["payload"].shape
    assert len(dut.i__payload) == in_layout.size
    vectors = cases(acc_bits, rng)
    expected = []
    for acc, t_lo, t_hi, ternary in vectors:
        layer = SimpleNamespace(activation="ternary" if ternary else "sign",
                                t_hi=np.int64(t_hi), t_lo=np.int64(t_lo))
        expected.append(int(activate(acc, layer)))

    await start(dut, i__valid=0)
    errors, received, sent = 0, 0, 0
    while received < len(vectors):
        await FallingEdge(dut.clk)
        if int(dut.o__valid.value):
            beat = unpack(out_layout, dut.o__payload.value.to_unsigned())
            if beat["tag"] != received % 65536 or beat["act"] != expected[received]:
                errors += 1
                if errors <= 10:
                    dut._log.error("case %r: act %d, model %d", vectors[received], beat["act"],
                                   expected[received])
            received += 1
        if sent < len(vectors):
            acc, t_lo, t_hi, ternary = vectors[sent]
            dut.i__payload.value = pack(in_layout, acc=acc, t_lo=t_lo, t_hi=t_hi,
                                        ternary=ternary, tag=sent % 65536)
            dut.i__valid.value = 1
            sent += 1
        else:
            dut.i__valid.value = 0
    dut._log.info("%d cases, %d errors", len(vectors), errors)
    assert errors == 0, f"{errors} activations differ from the model"
