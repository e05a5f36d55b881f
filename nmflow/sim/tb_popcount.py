"""cocotb testbench of the GXNOR lanes and popcount tree (:class:`~nmflow.rtl.lanes.GXNORPopcount`).

Environment: ``NMFLOW_TB_LANES``, ``NMFLOW_TB_XBITS`` (signed activation width; 2 for hidden layers,
input bits + 1 for the first layer), ``NMFLOW_TB_ROWS`` (random rows, default 10,000),
``NMFLOW_TB_SEED``. The lanes take ternary weights (what the read stage gives); the model is a dot
product; every output is checked with ``==`` and matched to its row by a sequence-number tag.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from nmflow.rtl.lanes import GXNORPopcount
from nmflow.sim.payload import pack, unpack
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


def weights_value(w):
    """A row of ternary weights as the lanes take it: lane ``p`` holds ``nz`` at bit ``2p`` and
    ``neg`` at bit ``2p + 1`` (:class:`~nmflow.rtl.pcsa.TernaryWeight`)."""
    return sum((int(v != 0) | int(v < 0) << 1) << (2 * p) for p, v in enumerate(w))


@cocotb.test()
async def popcount_matches_model(dut):
    lanes = int(os.environ["NMFLOW_TB_LANES"])
    x_bits = int(os.environ["NMFLOW_TB_XBITS"])
    count = int(os.environ.get("NMFLOW_TB_ROWS", "10000"))
    rng = np.random.default_rng(int(os.environ.get("NMFLOW_TB_SEED", "0")))
    component = GXNORPopcount(lanes, x_bits, TAG_BITS)
    in_layout = component.signature.members["i"].signature.members["payload"].shape
    out_layout = component.signature.members["o"].signature.members["payload"].shape
    assert len(dut.i__payload) == in_layout.size, "design and testbench disagree on the lanes"

    rows = directed_rows(lanes, x_bits, rng)
    top = (1 << (x_bits - 1)) - 1
    for _ in range(count):
        w = rng.integers(-1, 2, lanes)
        x = rng.integers(-1, 2, lanes) if x_bits == 2 else rng.integers(0, top + 1, lanes)
        rows.append((w, x))
    expected = [int((np.asarray(w, dtype=np.int64) * x).sum()) for w, x in rows]

    await start(dut, i__valid=0)

    errors, received, sent, cycle = 0, 0, 0, 0
    idle = random.Random(1)
    while received < len(rows):
        await FallingEdge(dut.clk)
        cycle += 1
        if int(dut.o__valid.value):
            beat = unpack(out_layout, dut.o__payload.value.to_unsigned())
            index = beat["tag"]
            if index != received % (1 << TAG_BITS) or beat["sum"] != expected[received]:
                errors += 1
                if errors <= 10:
                    dut._log.error("row %d: sum %d tag %d, model %d", received, beat["sum"],
                                   index, expected[received])
            received += 1
        if sent < len(rows) and idle.random() < 0.9:    # bubbles between rows now and then
            w, x = rows[sent]
            x_value = sum((int(v) & ((1 << x_bits) - 1)) << (x_bits * p) for p, v in enumerate(x))
            dut.i__payload.value = pack(in_layout, weights=weights_value(w), x=x_value,
                                        tag=sent % (1 << TAG_BITS))
            dut.i__valid.value = 1
            sent += 1
        else:
            dut.i__valid.value = 0
        assert cycle < 4 * len(rows) + 100, "popcount pipeline lost rows"
    dut._log.info("%d rows, %d errors, latency %d", len(rows), errors, component.latency)
    assert errors == 0, f"{errors} sums differ from the model"
