# amaranth: UnusedElaboratable=no
"""Board-side batches: HostLink's BATCH with the real engine against the protocol's twin.

The twin (:class:`nmflow.protocol.LinkModel` with a :class:`~nmflow.protocol.BatchInfo`) answers
each vector with :func:`nmflow.golden.reference.reference` and reports the cycles the engine's
plan says the batch takes (:meth:`~nmflow.golden.plan.EnginePlan.batch_cycles`); every reply,
cycle count included, must equal it byte for byte, and the engine must be fed exactly the
vectors of the accepted requests. The link's stores are built from block RAM, flip-flops and the
SPRAM model (small banks, so that the batch's results cross banks).
"""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from nmflow import protocol
from nmflow.golden.plan import EnginePlan
from nmflow.protocol import Command, ErrorCode, LinkModel
from nmflow.rtl.engine import InferenceEngine
from nmflow.rtl.hostlink import HostLink
from nmflow.rtl.store import Store

from helpers import link_model, refuses
from test_rtl_hostlink import TIMEOUT, LinkBench, good_vector, reference_infer

MODEL = link_model()


class BatchBench(LinkBench):
    """HostLink with a batch memory of ``capacity`` vectors and the real engine."""

    def __init__(self, model=MODEL, *, capacity=6, lanes=16, pe=1, buffer="block",
                 spram_depth=None, seed=0):
        self.model, self.seed = model, seed
        self.engine = InferenceEngine(model, lanes=lanes, pe=pe)
        self.plan = EnginePlan(model, lanes, pe=pe)
        self.tail = protocol.BatchInfo(capacity, 1_000_000)
        self.link = HostLink(model.n_inputs, model.input_bits, model.n_classes, model.score_bits,
                             timeout=TIMEOUT, batch=self.tail, buffer=buffer,
                             spram_depth=spram_depth)
        self.golden = LinkModel(model.n_inputs, model.input_bits, model.n_classes,
                                model.score_bits, reference_infer(model), batch=self.tail,
                                cycles=self.plan.batch_cycles)
        self.m = Module()
        self.m.submodules.engine = self.engine
        self.m.submodules.link = self.link
        wiring.connect(self.m, self.link.engine_i, self.engine.i)
        wiring.connect(self.m, self.engine.o, self.link.engine_o)


def vectors(count, seed=0):
    return [good_vector(seed + k) for k in range(count)]


def test_batch_info_and_parameters():
    tail = protocol.BatchInfo(100, 48_000_000)
    link = HostLink(16, 4, 5, 14, timeout=100, batch=tail)
    assert link.info == protocol.Info(protocol.BATCH_VERSION, 16, 5, 4, 2, 0, batch=tail)
    # version 6: the version 2 bytes, the flags (bit 2: batch), the capacity, the clock
    assert protocol.encode_info(link.info) == bytes([6, 16, 0, 5, 0, 4, 2, 0, 0b100, 100, 0,
                                                     0x00, 0x6c, 0xdc, 0x02])
    assert protocol.decode_info(protocol.encode_info(link.info)) == link.info
    assert link.capacity == 100 and HostLink(16, 4, 5, 14, timeout=100).capacity == 1
    refuses(lambda: HostLink(16, 4, 5, 14, timeout=100, batch=protocol.BatchInfo(4096)),
            ValueError, "batch capacity must be at most 65535 // n_inputs = 4095 vectors "
                        "(a request's payload), not 4096")
    refuses(lambda: HostLink(4, 4, 5, 14, timeout=100, batch=protocol.BatchInfo(6000)),
            ValueError, "batch capacity must be at most (65535 - 4) // 11 = 5957 vectors "
                        "(a reply's payload), not 6000")
    refuses(lambda: HostLink(16, 4, 5, 14, timeout=100, batch=protocol.BatchInfo(8, 0)),
            ValueError, "batch clock_hz must be 1 to 4294967295 Hz, not 0")
    refuses(lambda: HostLink(16, 4, 5, 14, timeout=100, batch=8), TypeError,
            "batch must be a BatchInfo, not int")


def test_info_of_every_feature_set_round_trips():
    unit = protocol.MetaplasticInfo(2, 64, 16, 12, 16, 15, 16, 1)
    weights, batch = protocol.WeightsInfo(300, 32, 2), protocol.BatchInfo(9, 12_000_000)
    for tails in ({}, {"metaplastic": unit}, {"weights": weights}, {"batch": batch},
                  {"metaplastic": unit, "batch": batch}, {"weights": weights, "batch": batch}):
        version = protocol.link_version(**tails)
        info = protocol.Info(version, 64, 10, 5, 2, 12, **tails)
        assert protocol.decode_info(protocol.encode_info(info)) == info
    assert protocol.link_version(weights=weights, batch=batch) == 6
    good = protocol.encode_info(protocol.Info(6, 64, 10, 5, 2, 0, weights=weights, batch=batch))
    assert good[8] == 0b110
    refuses(lambda: protocol.decode_info(good[:-1]), ValueError,
            "INFO reply payload of version 6 with flags 0x06 must hold 20 bytes, not 19")
    refuses(lambda: protocol.decode_info(good[:8] + bytes([0b010]) + good[9:]), ValueError,
            "INFO reply of version 6 must flag the batch memory (bit 2) and no bit above 2, "
            "not flags 0x02")


def test_twin_batch_rules():
    twin = LinkModel(4, 3, 2, 8, lambda v: (1, [sum(v), -1]), batch=protocol.BatchInfo(3),
                     cycles=lambda k: 1000 * k)
    reply = twin.burst(protocol.batch_request([[1, 2, 3, 4], [7, 7, 7, 7]]))
    assert protocol.decode_frame(reply) == (Command.BATCH | 0x80, bytes.fromhex(
        "d0070000" "010aff" "011cff"))
    assert protocol.decode_batch(protocol.decode_frame(reply)[1], 2, 1) == \
        (2000, [(1, [10, -1]), (1, [28, -1])])
    assert twin.fed == [[1, 2, 3, 4], [7, 7, 7, 7]]
    errors = {
        bytes(3): ErrorCode.BAD_LENGTH,             # less than a vector
        bytes(16): ErrorCode.BAD_LENGTH,            # beyond the capacity
        bytes(6): ErrorCode.BAD_VALUE,              # not a whole number of vectors
        bytes([0, 0, 8, 0]): ErrorCode.BAD_VALUE,   # a value of 4 bits on 3-bit inputs
    }
    for payload, code in errors.items():
        assert twin.burst(protocol.encode_frame(Command.BATCH, payload)) == \
            protocol.error_reply(code), payload.hex()
    plain = LinkModel(4, 3, 2, 8, lambda v: (1, [0, 0]))
    assert plain.burst(protocol.batch_request([[1, 2, 3, 4]])) == \
        protocol.error_reply(ErrorCode.BAD_COMMAND)


@pytest.mark.parametrize("buffer, spram_depth", [("block", None), ("logic", None),
                                                  ("spram", 16)])
def test_batches_equal_the_twin_cycle_counts_included(buffer, spram_depth):
    bench = BatchBench(capacity=6, buffer=buffer, spram_depth=spram_depth, seed=5)
    vs = vectors(9, seed=20)
    bursts = [protocol.info_request(),
              protocol.batch_request(vs[:6]),                         # a full batch
              protocol.infer_request(vs[6]),                          # INFER between batches
              protocol.batch_request(vs[6:7]),                        # one vector
              protocol.batch_request(vs[:7]),                         # over the capacity
              protocol.encode_frame(Command.BATCH, bytes(MODEL.n_inputs + 1)),   # a part
              protocol.batch_request([vs[0][:-1] + [1 << MODEL.input_bits]]),    # a bad value
              protocol.batch_request(vs[7:9] + vs[1:2])]
    replies, fed = bench.run(bursts)
    assert (replies, fed) == bench.expected(bursts)
    assert replies[0] == protocol.info_reply(bench.link.info)
    assert [protocol.decode_frame(r)[0] for r in replies[4:7]] == [protocol.ERROR_REPLY] * 3
    cycles, results = protocol.decode_batch(protocol.decode_frame(replies[1])[1],
                                            MODEL.n_classes, 3)
    plan = bench.plan
    assert cycles == plan.cycles_per_inference + 5 * plan.interval_cycles
    assert results == [reference_infer(MODEL)(v) for v in vs[:6]]
    # one vector alone takes the engine's cycles per inference
    assert protocol.decode_batch(protocol.decode_frame(replies[3])[1], MODEL.n_classes, 3)[0] \
        == plan.cycles_per_inference


def test_batches_at_a_wide_folding():
    bench = BatchBench(capacity=4, lanes=16, pe=4, seed=2)
    bursts = [protocol.batch_request(vectors(4, seed=40)), protocol.batch_request(vectors(2))]
    assert bench.run(bursts) == bench.expected(bursts)


def test_batch_refused_by_a_link_without_it():
    bench = LinkBench(seed=3)
    burst = protocol.batch_request(vectors(1))
    replies, fed = bench.run([burst])
    assert replies == [protocol.error_reply(ErrorCode.BAD_COMMAND)] == bench.expected([burst])[0]
    assert fed == []


def test_store_kinds_hold_what_was_written():
    from amaranth.sim import Simulator
    rng = np.random.default_rng(0)
    for kind, depth in (("block", 40), ("logic", 40), ("spram", 40)):
        store = Store(depth, 21, kind=kind, **({"spram_depth": 16} if kind == "spram" else {}))
        assert store.sprams == (2 if kind == "spram" else 0)      # 2 columns of 16K words
        words = rng.integers(0, 1 << 21, depth).tolist()
        seen = []

        async def bench(ctx):
            for addr, word in enumerate(words):
                ctx.set(store.addr, addr)
                ctx.set(store.wdata, word)
                ctx.set(store.we, 1)
                await ctx.tick()
            ctx.set(store.we, 0)
            for addr in reversed(range(depth)):
                ctx.set(store.addr, addr)
                ctx.set(store.re, 1)
                await ctx.tick()
                ctx.set(store.re, 0)
                ctx.set(store.addr, (addr + 7) % depth)     # no read: the word stays
                await ctx.tick()
                seen.append(ctx.get(store.rdata))

        sim = Simulator(store)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()
        assert seen == words[::-1], kind
