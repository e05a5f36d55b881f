"""cocotb testbench of the GXNOR lanes and popcount tree (:class:`~nmflow.rtl.lanes.GXNORPopcount`).

Environment: ``NMFLOW_TB_LANES``, ``NMFLOW_TB_XBITS`` (signed activation width; 2 for hidden layers,
input bits + 1 for the first layer), ``NMFLOW_TB_ROWS`` (random rows, default 10,000),
``NMFLOW_TB_SEED``. The lanes take ternary weights (what the read stage gives); the model is a dot
product; every output is checked with ``==`` and matched to its row by a sequence-number tag.
Rows are driven with bubbles now and then and the sums taken on the harness
(:mod:`nmflow.sim.harness`), in the ports' layouts.
"""

import os
import random

import cocotb
import numpy as np

from nmflow.rtl.lanes import GXNORPopcount
from nmflow.sim.harness import Driver, Monitor, Scoreboard, Stream, port_shape
from nmflow.sim.tbutil import start

TAG_BITS = 16


def directed_rows(lanes, x_bits, rng):
    """All -1, all +1, all 0 and mixed rows against extreme and mixed activations."""
    top = (1 << (x_bits - 1)) - 1
    hidden = x_bits == 2
    xs = [np.full(lanes, v) for v in ((-1, 0, 1) if hidden else (0, 1, top))]
    xs.append(rng.integers(-1, 2, lanes) if hidden else rng.integers(0, top + 1, lanes))
    rows = []
    for w in (np.full(lanes, -1), np.full(lanes, 1), np.zeros(lanes, int),
              np.resize([1, -1, 0], lanes), rng.integers(-1, 2, lanes)):
        for x in xs:
            rows.append((w, np.asarray(x)))
    return rows


def ternary_beat(w):
    """A row of ternary weights as the lanes' ``weights`` field
    (:class:`~nmflow.rtl.pcsa.TernaryWeight`: ``nz`` and ``neg``)."""
    return [{"nz": int(v != 0), "neg": int(v < 0)} for v in w]


@cocotb.test()
async def popcount_matches_model(dut):
    lanes = int(os.environ["NMFLOW_TB_LANES"])
    x_bits = int(os.environ["NMFLOW_TB_XBITS"])
    pe = int(os.environ.get("NMFLOW_TB_PE", "1"))
    simd = lanes // pe
    count = int(os.environ.get("NMFLOW_TB_ROWS", "10000"))
    rng = np.random.default_rng(int(os.environ.get("NMFLOW_TB_SEED", "0")))
    component = GXNORPopcount(lanes, x_bits, TAG_BITS, pe=pe)
    stream_i = Stream(dut, "i", port_shape(component, "i"))
    stream_o = Stream(dut, "o", port_shape(component, "o"))

    rows = [(np.resize(w, lanes), x) for w, x in directed_rows(simd, x_bits, rng)]
    top = (1 << (x_bits - 1)) - 1
    for _ in range(count):
        w = rng.integers(-1, 2, lanes)
        x = rng.integers(-1, 2, simd) if x_bits == 2 else rng.integers(0, top + 1, simd)
        rows.append((w, x))
    scoreboard = Scoreboard("model", log=dut._log, logged=10)
    beats = []
    for index, (w, x) in enumerate(rows):
        tag = index % (1 << TAG_BITS)
        beats.append({"weights": ternary_beat(w), "x": [int(v) for v in x], "tag": tag})
        # neuron q takes lanes [q * simd, (q + 1) * simd) against the shared chunk x
        products = np.asarray(w, dtype=np.int64).reshape(pe, simd) * x
        scoreboard.expect("o", {"sums": [int(v) for v in products.sum(axis=1)], "tag": tag},
                          f"row {index}")

    await start(dut, i__valid=0)
    monitor = Monitor(stream_o, lambda beat, _: scoreboard.observe("o", beat))
    monitor.start()
    # bubbles between rows now and then
    Driver(stream_i, rng=random.Random(1), valid=0.9).start(beats)
    await monitor.wait(len(rows), 4 * len(rows) + 100, "popcount pipeline lost rows")
    scoreboard.finish()
    dut._log.info("%d rows, %d errors, latency %d", len(rows), scoreboard.errors,
                  component.latency)
    assert scoreboard.errors == 0, f"{scoreboard.errors} sums differ from the model"
