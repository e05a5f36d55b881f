"""cocotb testbench of the threshold/activation unit (:class:`~nmflow.rtl.threshold.ThresholdUnit`).

Environment: ``NMFLOW_TB_ACCBITS``, ``NMFLOW_TB_SEED``. For many threshold pairs (equal, adjacent,
wide, at the ends of the range) it drives every pre-activation at and around each threshold in
both modes and checks the activation with ``==`` against :func:`nmflow.golden.reference.activate`,
on the harness (:mod:`nmflow.sim.harness`), in the ports' layouts.
"""

import os
from types import SimpleNamespace

import cocotb
import numpy as np

from nmflow.golden.reference import activate
from nmflow.rtl.threshold import ThresholdUnit
from nmflow.sim.harness import Driver, Monitor, Scoreboard, Stream, port_shape
from nmflow.sim.tbutil import start

TAG_BITS = 16


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
    component = ThresholdUnit(acc_bits, TAG_BITS)
    vectors = cases(acc_bits, rng)
    stream_i = Stream(dut, "i", port_shape(component, "i"))
    stream_o = Stream(dut, "o", port_shape(component, "o"))
    scoreboard = Scoreboard("model", log=dut._log, logged=10)
    beats = []
    for index, (acc, t_lo, t_hi, ternary) in enumerate(vectors):
        tag = index % (1 << TAG_BITS)
        beats.append({"acc": acc, "t_lo": t_lo, "t_hi": t_hi, "ternary": ternary, "tag": tag})
        layer = SimpleNamespace(activation="ternary" if ternary else "sign",
                                t_hi=np.int64(t_hi), t_lo=np.int64(t_lo))
        scoreboard.expect("o", {"act": int(activate(acc, layer)), "tag": tag},
                          f"case {vectors[index]!r}")

    await start(dut, i__valid=0)
    monitor = Monitor(stream_o, lambda beat, _: scoreboard.observe("o", beat))
    monitor.start()
    await Driver(stream_i).send(beats)
    await monitor.wait(len(vectors), 100, "the threshold unit lost activations")
    scoreboard.finish()
    dut._log.info("%d cases, %d errors", len(vectors), scoreboard.errors)
    assert scoreboard.errors == 0, f"{scoreboard.errors} activations differ from the model"
