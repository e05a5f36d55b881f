# amaranth: UnusedElaboratable=no
"""The host link's metaplastic commands (UPDATE, LOAD, READ; protocol version 3) end to end.

Expected values come from the golden twins only: the update rule's
(:class:`nmflow.golden.metafixed.MetaFixedRule`) for every UPDATE and LOAD reply, the model's
memory image (:func:`nmflow.golden.pairs.memory_codes`) rewritten with ``sign(W_h)`` of every
enabled lane for every READ, the link's (:class:`nmflow.protocol.LinkModel`) for every reply byte
at the stream level, and :func:`nmflow.golden.reference.reference` of the model whose binary
weights are the signs of the twin's hidden weights for every inference after the updates.
"""

import dataclasses
import json
import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from nmflow import protocol
from nmflow.boards.host import EngineLink
from nmflow.errors import NmflowError
from nmflow.golden.hwmodel import HardwareModel
from nmflow.golden.metafixed import MetaFixedRule
from nmflow.golden.pairs import MINUS, PLUS, memory_codes, read_weights
from nmflow.golden.plan import EnginePlan
from nmflow.golden.reference import reference
from nmflow.protocol import Command, ErrorCode, Info, LinkModel, MetaplasticInfo
from nmflow.protocol import MetaplasticCommand as MCommand
from nmflow.rtl.engine import InferenceEngine
from nmflow.rtl.hostlink import HostLink
from nmflow.rtl.metaplastic import MetaplasticUnit, hidden_groups
from nmflow.rtl.top import HostTop
from nmflow.sim.metaplastic_sim import binary_model
from nmflow.sim.streams import stream_get, stream_put
from nmflow.sim.uart_bridge import SimulatedBoard

from helpers import link_model

ENGINE_LANES = 4
M = 2.0
TABLE = 64
MODEL, HIDDEN = binary_model((8, 6, 3), seed=1)
PLAN = EnginePlan(MODEL, ENGINE_LANES)
WORDS, EN = hidden_groups(HIDDEN, PLAN.mmap, 2)          # [groups, 2] and the real lanes
MASKS = [int(EN[g, 0]) | int(EN[g, 1]) << 1 for g in range(len(EN))]
RULE = MetaFixedRule(M, table_size=TABLE)
META = MetaplasticInfo(lanes=2, groups=len(WORDS), w_bits=16, w_frac=12, u_bits=16, u_frac=15,
                engine_lanes=ENGINE_LANES)


class Twin:
    """The hidden weights as the rule's twin sees them, and the model they stand for."""

    def __init__(self, groups, lanes):
        self.hidden = np.zeros((groups, lanes), dtype=np.int64)    # SPRAM/RAM start at zero
        # the engine's memory: the model's image until a lane is written
        self.codes = memory_codes([ly.weights for ly in MODEL.layers], PLAN.mmap).copy()

    def apply(self, command, group, mask, values):
        k = ENGINE_LANES // lanes_of(self.hidden)
        for p, value in enumerate(values):
            if mask >> p & 1:
                if command == MCommand.LOAD:
                    self.hidden[group, p] = value
                else:
                    self.hidden[group, p] = RULE.update(np.array([self.hidden[group, p]]),
                                                        np.array([value]))[0]
                lane = (group % k) * lanes_of(self.hidden) + p
                self.codes[group // k, lane] = PLUS if self.hidden[group, p] >= 0 else MINUS
        return [int(v) for v in self.hidden[group]]

    def read(self, row, count):
        return self.codes[row:row + count].tolist()

    def model(self):
        """MODEL with the binary weights ``sign(hidden)`` (+1 at 0) of the real synapses."""
        flat = self.hidden.reshape(PLAN.mmap.rows, ENGINE_LANES)
        layers = []
        for k, layer in enumerate(MODEL.layers):
            base, per = PLAN.mmap.row(k, 0, 0), PLAN.mmap.per[k]
            w = flat[base:base + layer.n_out * per].reshape(layer.n_out, -1)[:, :layer.n_in]
            layers.append(dataclasses.replace(layer,
                                              weights=np.where(w >= 0, 1, -1).astype(np.int8)))
        return HardwareModel(MODEL.input_bits, "binary", layers)

    def infer(self, values):
        trace = reference(self.model(), np.array(values, dtype=np.int64), lanes=ENGINE_LANES)
        return int(trace.classes[0]), [int(s) for s in trace.scores[0]]


def lanes_of(hidden):
    return hidden.shape[1]


def random_updates(rng, n):
    """``n`` (group, d) pairs: mostly small steps, some large, some zero (read-backs)."""
    out = []
    for _ in range(n):
        g = int(rng.integers(0, len(WORDS)))
        kind = rng.random()
        if kind < 0.1:
            d = [0, 0]
        elif kind < 0.3:
            d = rng.integers(-32768, 32768, 2).tolist()
        else:
            d = rng.integers(-3000, 3001, 2).tolist()
        out.append((g, [int(v) for v in d]))
    return out


# -- the protocol ----------------------------------------------------------------------------------

def test_info_tail_and_request_bytes():
    info = Info(4, 16, 5, 5, 2, 0, dataclasses.replace(META, groups=126, engine_lanes=16))
    payload = protocol.encode_info(info)
    assert payload.hex(" ") == "04 10 00 05 00 05 02 00 02 7e 00 10 0c 10 0f 10 00 01"
    assert protocol.decode_info(payload) == info
    with pytest.raises(NmflowError, match=r"^INFO reply payload of version 4 must hold 18 "
                                          r"bytes, not 8$"):
        protocol.decode_info(payload[:8])
    # UPDATE of group 5, both lanes, d = (-8, 300); LOAD of group 0x0102, lane 0 only, w = 1234
    assert protocol.update_request(META, 5, 3, [-8, 300]).hex(" ") == (
        "a5 04 07 00 05 00 03 f8 ff 2c 01 0e")
    assert protocol.load_request(META, 0x102, 1, [1234, 0]).hex(" ") == (
        "a5 05 07 00 02 01 01 d2 04 00 00 1f")
    assert protocol.group_reply(MCommand.LOAD, META, [1234, 0]).hex(" ") == (
        "a5 85 04 00 d2 04 00 00 ce")
    assert protocol.group_reply(MCommand.UPDATE, META, [-1, 2])[:7].hex(" ") == (
        "a5 84 04 00 ff ff 02")
    assert protocol.decode_group_reply(bytes.fromhex("ff ff 02 00"), META) == [-1, 2]
    with pytest.raises(ValueError, match="^value 32768 does not fit 16 bits$"):
        protocol.encode_group(0, 3, [32768, 0], 2)
    assert META.problem() is None
    assert dataclasses.replace(META, w_bits=12).problem() == (
        "w_bits must be 8, 16, 24 or 32 (whole bytes on the link), not 12")
    assert dataclasses.replace(META, groups=70000).problem() == (
        "groups must be an integer from 1 to 65535, not 70000")
    assert dataclasses.replace(META, engine_lanes=6).problem() == (
        "engine_lanes must be a power of two and at least lanes = 2, not 6")
    assert dataclasses.replace(META, groups=35).problem() == (
        "groups must be a multiple of engine_lanes / lanes = 2 (whole rows), not 35")
    # READ: rows 0x0102.., 3 of them; reply rows of 16 lanes are 4 bytes, lane 0 in bits 1:0
    assert protocol.read_request(0x102, 3).hex(" ") == "a5 06 04 00 02 01 03 00 " + (
        f"{protocol.CRC.compute(bytes.fromhex('06 04 00 02 01 03 00')):02x}")
    wide = dataclasses.replace(META, groups=126, engine_lanes=16)
    assert (wide.rows, wide.row_bytes, wide.max_read) == (15, 4, 15)
    row = [PLUS, MINUS, 0, 3] + [0] * 11 + [PLUS]
    reply = protocol.read_reply(wide, [row])
    assert reply[:8].hex(" ") == "a5 86 04 00 c6 00 00 80"
    assert protocol.decode_read_reply(reply[4:-1], wide, 1) == [row]
    assert (META.rows, META.row_bytes) == (18, 1)
    assert META.read_problem(0, 0) == "count must be at least 1, not 0"
    assert META.read_problem(10, 9) == "row + count must be at most rows = 18, not 19"
    assert META.read_problem(0, 18) is None
    huge = dataclasses.replace(META, groups=65534, lanes=2, engine_lanes=256)
    assert (huge.rows, huge.row_bytes) == (511, 64)
    assert huge.read_problem(0, 1024) == "row + count must be at most rows = 511, not 1024"
    assert huge.max_read == 511
    assert dataclasses.replace(huge, groups=65408, lanes=1, engine_lanes=64).max_read == 1022
    with pytest.raises(NmflowError, match=r"^READ reply payload must hold 3 bytes \(3 rows of "
                                          r"1\), not 2$"):
        protocol.decode_read_reply(b"\0\0", META, 3)


def test_link_model_refuses_and_applies():
    plain = LinkModel(16, 5, 5, 10, lambda v: (0, [0] * 5))
    assert plain.burst(protocol.update_request(META, 0, 3, [1, 1])) == \
        protocol.error_reply(ErrorCode.BAD_COMMAND)
    twin = Twin(META.groups, 2)
    lm = LinkModel(16, 5, 5, 10, twin.infer, metaplastic=META, apply=twin.apply)
    assert lm.info.version == protocol.METAPLASTIC_VERSION
    bad_group = protocol.load_request(META, META.groups, 1, [5, 5])
    assert lm.burst(bad_group) == protocol.error_reply(ErrorCode.BAD_VALUE)
    assert lm.burst(protocol.load_request(META, 0, 4, [5, 5])) == \
        protocol.error_reply(ErrorCode.BAD_VALUE)
    short = protocol.encode_frame(MCommand.UPDATE, bytes(6))
    assert lm.burst(short) == protocol.error_reply(ErrorCode.BAD_LENGTH)
    assert lm.burst(protocol.load_request(META, 3, 2, [7, -9])) == \
        protocol.group_reply(MCommand.LOAD, META, [0, -9])
    assert lm.applied == [(MCommand.LOAD, 3, 2, [7, -9])]
    assert plain.burst(protocol.read_request(0, 1)) == protocol.error_reply(ErrorCode.BAD_COMMAND)


def test_link_model_reads_rows():
    twin = Twin(META.groups, 2)
    lm = LinkModel(16, 5, 5, 10, twin.infer, metaplastic=META, apply=twin.apply, read=twin.read)
    image = memory_codes([ly.weights for ly in MODEL.layers], PLAN.mmap)
    assert lm.burst(protocol.read_request(0, META.rows)) == protocol.read_reply(META, image)
    # group 3 is lanes 2..3 of row 1: a negative weight in lane 3 reads back as MINUS
    lm.burst(protocol.load_request(META, 3, 3, [5, -5]))
    row = lm.burst(protocol.read_request(1, 1))
    assert protocol.decode_read_reply(row[4:-1], META, 1) == [
        image[1, :2].tolist() + [PLUS, MINUS]]
    for row, count in ((0, 0), (0, META.rows + 1), (META.rows, 1), (0xFFFF, 0xFFFF)):
        assert lm.burst(protocol.read_request(row, count)) == \
            protocol.error_reply(ErrorCode.BAD_VALUE), (row, count)
    assert lm.burst(protocol.encode_frame(MCommand.READ, bytes(3))) == \
        protocol.error_reply(ErrorCode.BAD_LENGTH)


# -- the gateware at the stream level, reply bytes against the link's twin ------------------------

TIMEOUT = 40


class MetaBench:
    """HostLink (with or without the unit) on a writable engine and the unit, wired as in
    HostTop; bursts in, reply bytes out (random gaps and backpressure)."""

    def __init__(self, *, meta=True, seed=0):
        self.seed = seed
        self.engine = InferenceEngine(MODEL, lanes=ENGINE_LANES, writable=meta)
        self.unit = MetaplasticUnit(self.engine.plan, M, lanes=2, table_size=TABLE,
                                    storage="memory") if meta else None
        info = MetaplasticInfo.of_unit(self.unit) if meta else None
        assert info in (META, None)
        self.link = HostLink(MODEL.n_inputs, MODEL.input_bits, MODEL.n_classes,
                             MODEL.score_bits, timeout=TIMEOUT, metaplastic=info)
        self.twin = Twin(META.groups, 2)
        self.golden = LinkModel(MODEL.n_inputs, MODEL.input_bits, MODEL.n_classes,
                                MODEL.score_bits, self.twin.infer, metaplastic=info,
                                apply=self.twin.apply, read=self.twin.read)
        m = self.m = Module()
        m.submodules.engine, m.submodules.link = self.engine, self.link
        wiring.connect(m, self.engine.o, self.link.engine_o)
        if meta:
            m.submodules.unit = unit = self.unit
            wiring.connect(m, unit.weights, self.engine.weights)
            wiring.connect(m, self.link.metaplastic_i, unit.i)
            wiring.connect(m, unit.o, self.link.metaplastic_o)
            wiring.connect(m, self.link.pairs, self.engine.pairs)
            ei, li = self.engine.i, self.link.engine_i
            m.d.comb += [unit.idle.eq(self.engine.idle), ei.valid.eq(li.valid & ~unit.busy),
                         ei.payload.eq(li.payload), li.ready.eq(ei.ready & ~unit.busy)]
        else:
            wiring.connect(m, self.link.engine_i, self.engine.i)

    def run(self, bursts):
        link = self.link
        send_rng, take_rng = random.Random(self.seed), random.Random(self.seed + 1)
        replies, reply = [], bytearray()

        async def sender(ctx):
            for burst in bursts:
                for byte in burst:
                    await stream_put(ctx, link.rx, byte, rng=send_rng, valid=0.4)
                quiet = 0
                for _ in range(4000):
                    *_, idle = await ctx.tick().sample(link.idle)
                    quiet += 1
                    if quiet > TIMEOUT and idle:
                        break
                else:
                    raise AssertionError(f"link did not settle after burst {burst.hex(' ')}")
                await ctx.tick()
                replies.append(bytes(reply))
                reply.clear()

        async def receiver(ctx):
            while True:
                reply.append(await stream_get(ctx, link.tx, rng=take_rng, ready=0.3))

        sim = Simulator(self.m)
        sim.add_clock(1e-6)
        sim.add_testbench(sender)
        sim.add_testbench(receiver, background=True)
        sim.run()
        return replies


def _loads():
    return [protocol.load_request(META, g, MASKS[g], WORDS[g].tolist()) for g in range(len(WORDS))]


def test_stream_level_replies_equal_the_twin():
    bench = MetaBench(seed=3)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 32, (2, 8)).tolist()
    good_up = protocol.update_request(META, 7, MASKS[7], [2500, -2500])
    full = protocol.read_request(0, META.rows)
    bursts = [protocol.info_request(), full] + _loads() + [protocol.infer_request(x[0]), full]
    bursts += [protocol.update_request(META, g, MASKS[g], d)
               for g, d in random_updates(rng, 40)]
    bursts += [
        full, protocol.read_request(5, 1), protocol.read_request(META.rows - 3, 3),
        protocol.read_request(0, 0),                                       # BAD_VALUE: count
        protocol.read_request(META.rows - 3, 4),                           # past the last row
        protocol.read_request(0xFFFF, 1),
        protocol.encode_frame(MCommand.READ, bytes(5)),                     # BAD_LENGTH
        protocol.read_request(2, 2)[:-1] + b"\x00",                        # BAD_CHECKSUM (or ok)
        protocol.read_request(2, 2)[:6],                                   # TIMEOUT
    ]
    bursts += [
        protocol.update_request(META, META.groups, 3, [1, 1]),             # BAD_VALUE: group
        protocol.update_request(META, 0xFFFF, 3, [1, 1]),
        protocol.load_request(META, 1, 4, [1, 1]),                         # BAD_VALUE: mask
        protocol.encode_frame(MCommand.LOAD, bytes(8)),                     # BAD_LENGTH
        protocol.encode_frame(MCommand.UPDATE, bytes(3)),
        good_up[:-1] + bytes([good_up[-1] ^ 1]),                           # BAD_CHECKSUM
        good_up[:9],                                                       # TIMEOUT
        good_up + protocol.info_request(),                                 # trailing: discarded
        protocol.update_request(META, 7, 0, [9, 9]),                       # mask 0: read-back
        protocol.infer_request(x[1]),
        full,
    ]
    want = [bench.golden.burst(b) for b in bursts]
    got = bench.run(bursts)
    assert got == want
    codes = {r[4] for r in want if r[1] == protocol.Reply.ERROR}
    assert codes == {ErrorCode.BAD_VALUE, ErrorCode.BAD_LENGTH, ErrorCode.BAD_CHECKSUM,
                     ErrorCode.TIMEOUT}
    assert bench.twin.model().layers[0].weights.tolist() != MODEL.layers[0].weights.tolist()


def test_link_without_unit_refuses_update_and_load():
    bench = MetaBench(meta=False)
    bursts = [protocol.update_request(META, 0, 3, [1, 1]),
              protocol.load_request(META, 0, 3, [1, 1]), protocol.info_request()]
    got = bench.run(bursts)
    assert got == [bench.golden.burst(b) for b in bursts]
    assert got[0] == got[1] == protocol.error_reply(ErrorCode.BAD_COMMAND)
    assert got[2] == protocol.info_reply(Info(2, 8, 3, 5, protocol.score_bytes(MODEL.score_bits)))


def test_host_top_option_and_refusals():
    top = HostTop(MODEL, lanes=4, clk_freq=12e6, metaplastic=dict(m=M, table_size=TABLE))
    assert top.info.metaplastic == META and top.info.version == 4
    assert HostTop(MODEL, lanes=4, clk_freq=12e6).info.metaplastic is None
    with pytest.raises(NmflowError, match="^the metaplastic unit cannot be reached over the link: "
                                          "w_bits must be 8, 16, 24 or 32"):
        from nmflow.fixedpoint import FixedFormat
        HostTop(MODEL, lanes=4, clk_freq=12e6,
                metaplastic=dict(m=M, w_format=FixedFormat(True, 3, 8)))


# -- the host driver against the simulated board ---------------------------------------------------

def test_host_streams_updates_and_reads_back():
    """Load every group, stream 100 updates from the twin's point of view (every reply == the
    rule's result), then infer (== the reference of the model with the twin's binary weights).
    (100 updates flip 26 of the 66 binary weights; 250 flipped 34 at 2.5 x the time.)"""
    twin = Twin(META.groups, 2)
    rng = np.random.default_rng(11)
    x = rng.integers(0, 32, (4, 8))
    kw = dict(m=M, lanes=2, table_size=TABLE, storage="spram", spram_depth=64)
    with SimulatedBoard.engine(MODEL, lanes=ENGINE_LANES, divisor=4, metaplastic=kw) as board:
        with EngineLink(board.url, timeout=20) as link:
            assert link.info().metaplastic == META
            image = memory_codes([ly.weights for ly in MODEL.layers], PLAN.mmap)
            assert link.read_rows().tolist() == image.tolist()         # the bitstream's image
            for g in range(META.groups):
                got = link.load(g, WORDS[g], mask=MASKS[g])
                assert got == twin.apply(MCommand.LOAD, g, MASKS[g], WORDS[g].tolist())
            classes, scores = link.infer_many(x[:2])
            before = reference(MODEL, x[:2], lanes=ENGINE_LANES)
            assert classes.tolist() == before.classes.tolist()
            assert scores.tolist() == before.scores.tolist()
            for g, d in random_updates(rng, 100):
                got = link.update(g, d, mask=MASKS[g])
                assert got == twin.apply(MCommand.UPDATE, g, MASKS[g], d), (g, d)
            after = reference(twin.model(), x, lanes=ENGINE_LANES)
            changed = sum(int((a.weights != b.weights).sum())
                          for a, b in zip(twin.model().layers, MODEL.layers))
            assert changed > 10
            classes, scores = link.infer_many(x)
            assert classes.tolist() == after.classes.tolist()
            assert scores.tolist() == after.scores.tolist()
            # the binary weights, read from the engine's memory itself
            assert link.read_rows().tolist() == twin.codes.tolist()
            assert link.read_rows(5, 2).tolist() == twin.codes[5:7].tolist()
            got = link.read_weights(MODEL)
            assert [w.tolist() for w in got] == [ly.weights.tolist()
                                                 for ly in twin.model().layers]
            with pytest.raises(NmflowError, match=rf"^row must be an integer from 0 to "
                                                  rf"{META.rows - 1}, not {META.rows}$"):
                link.read_rows(META.rows)
            with pytest.raises(NmflowError, match=r"^count must be an integer from 1 to rows - "
                                                  r"row = 3, not 4$"):
                link.read_rows(META.rows - 3, 4)
            other, _ = binary_model((8, 7, 3), seed=1)
            with pytest.raises(NmflowError, match=r"^model does not match the board: layers "
                                                  r"8-7-3 at 4 lanes and pe 1 take 20 rows, the board "
                                                  r"has 18$"):
                link.read_weights(other)
            # read-back of hidden weights: an update of zeros
            for g in (0, 5, META.groups - 1):
                assert link.update(g, [0, 0]) == twin.hidden[g].tolist()
            with pytest.raises(NmflowError, match=rf"^group must be an integer from 0 to "
                                                  rf"{META.groups - 1}, not {META.groups}$"):
                link.update(META.groups, [0, 0])
            with pytest.raises(NmflowError, match=r"^d must hold signed 16-bit integers "
                                                  r"\(-32768 to 32767\), not 40000$"):
                link.update(0, [40000, 0])
    assert board.frame_errors == 0


def test_host_refuses_update_without_unit():
    small = link_model(seed=9, sizes=(4, 3), input_bits=2)
    with SimulatedBoard.engine(small, lanes=4, divisor=5) as board:
        with EngineLink(board.url, timeout=10) as link:
            with pytest.raises(NmflowError, match=r"^the board at .* has no metaplastic unit: "
                                                  r"build it with --metaplastic to send UPDATE$"):
                link.update(0, [0, 0])
            with pytest.raises(NmflowError, match=r"^the board at .* has no metaplastic unit: "
                                                  r"build it with --metaplastic to send READ$"):
                link.read_rows()


def test_host_step_reads_the_weights_back(capsys, tmp_path):
    """`nmflow host` on a metaplastic board reads its weight memory first: zero differences on
    a fresh board (the bitstream's image), and after LOADs that flip signs, exactly the flipped
    synapses, with a one-line error and a non-zero exit."""
    from nmflow.golden import hwmodel
    from nmflow.scripts.cli import main
    hwmodel.save(MODEL, tmp_path / "hwmodel")
    x = np.random.default_rng(2).integers(0, 32, (2, 8))
    np.savez(tmp_path / "x.npz", x=x)
    args = ["host", "--run", str(tmp_path), "--inputs", str(tmp_path / "x.npz"),
            "--timeout", "30", "--lanes", str(ENGINE_LANES)]
    kw = dict(m=M, lanes=2, table_size=TABLE, storage="spram", spram_depth=64)
    with SimulatedBoard.engine(MODEL, lanes=ENGINE_LANES, divisor=4, metaplastic=kw) as board:
        assert main(args + ["--port", board.url]) == 0
        report = json.loads((tmp_path / "board.json").read_text())
        assert report["weight_mismatches"] == 0 and report["mismatches"] == 0
        # flip the sign of every real synapse in groups 0 and 1 (layer 0, neuron 0, inputs 0-3)
        twin = Twin(META.groups, 2)
        with EngineLink(board.url, timeout=20) as link:
            for g in (0, 1):
                w = [-1000 if v > 0 else 1000 for v in MODEL.layers[0].weights[0, 2 * g:2 * g + 2]]
                link.load(g, w, mask=MASKS[g])
                twin.apply(MCommand.LOAD, g, MASKS[g], w)
        now = read_weights(twin.codes, PLAN.mmap)
        flipped = sum(int((w != layer.weights).sum()) for w, layer in zip(now, MODEL.layers))
        assert flipped == 4
        assert main(args + ["--port", board.url]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("nmflow: error: 4 weights read back from the board differ from "
                               "the model's, and ")
        assert line.endswith(" outputs: the board was trained on chip or holds another "
                             "model's bitstream")
        assert json.loads((tmp_path / "board.json").read_text())["weight_mismatches"] == 4
