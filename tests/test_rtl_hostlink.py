# amaranth: UnusedElaboratable=no
"""HostLink + InferenceEngine at the byte-stream level, against the protocol's golden twin.

Every reply is compared byte for byte with :class:`nmflow.protocol.LinkModel` (which runs
:func:`nmflow.golden.reference.reference` for INFER), and every value the engine receives is
compared with the vectors of the valid INFER requests: the engine is never fed a partial or
invalid vector. The bench moves bytes with :mod:`nmflow.sim.streams`: random gaps between the
bytes of a burst, random backpressure from the stand-in transmitter.
"""

import os
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from amaranth.hdl import Fragment, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from nmflow import protocol
from nmflow.golden.injector import ErrorInjection, InjectedRead
from nmflow.golden.readerrors import ErrorRates
from nmflow.golden.reference import reference
from nmflow.protocol import Command, ErrorCode, LinkModel
from nmflow.rtl.engine import InferenceEngine
from nmflow.rtl.hostlink import HostLink
from nmflow.rtl.top import HostTop, uart_divisor
from nmflow.sim.streams import stream_get, stream_put

from helpers import link_model, refuses

TIMEOUT = 40        # link timeout in cycles: far longer than any gap between the bytes of a burst
SEND = 0.4          # chance that a byte of a burst is offered in a given cycle (mean gap 1.5)
TAKE = 0.25         # chance that the stand-in transmitter is ready in a given cycle
SETTLE = 4000       # cycles after a burst within which the link must be hunting again


def reference_infer(model):
    def infer(values):
        trace = reference(model, np.array(values, dtype=np.int64))
        return int(trace.classes[0]), [int(s) for s in trace.scores[0]]
    return infer


MODEL = link_model()


class LinkBench:
    """HostLink and the real engine; bytes in, reply bytes and engine inputs out."""

    def __init__(self, model=MODEL, *, seed=0, errors=None):
        self.model = model
        self.seed = seed
        self.engine = InferenceEngine(model, lanes=16, errors=errors)
        rate_bits = None if errors is None else errors.rate_bits
        self.link = HostLink(model.n_inputs, model.input_bits, model.n_classes, model.score_bits,
                             timeout=TIMEOUT, rate_bits=rate_bits)
        if errors is None:
            self.golden = LinkModel(model.n_inputs, model.input_bits, model.n_classes,
                                    model.score_bits, reference_infer(model))
        else:
            # The twin reads through the injector's golden twin, made afresh on each ERRORS.
            self.read = InjectedRead(errors, 16)

            def infer(values):
                trace = reference(model, np.array(values, dtype=np.int64), read=self.read)
                return int(trace.classes[0]), [int(s) for s in trace.scores[0]]

            def configure(config):
                self.read = InjectedRead(injection_of(config, errors.rate_bits), 16)

            self.golden = LinkModel(model.n_inputs, model.input_bits, model.n_classes,
                                    model.score_bits, infer, rate_bits=rate_bits,
                                    configure=configure)
        self.m = Module()
        self.m.submodules.engine = self.engine
        self.m.submodules.link = self.link
        wiring.connect(self.m, self.link.engine_i, self.engine.i)
        wiring.connect(self.m, self.engine.o, self.link.engine_o)
        if errors is not None:
            wiring.connect(self.m, self.link.errors, self.engine.errors)

    def run(self, bursts):
        """Send each burst (random gaps between its bytes, each far shorter than the timeout),
        then wait until the line has been quiet for longer than the timeout and the link is idle
        again. The reply bytes are taken with random backpressure throughout.

        Returns the reply bytes received during each burst and the list of input vectors the
        engine received (its beats cut into vectors of ``n_inputs``).
        """
        link = self.link
        send_rng, take_rng = random.Random(self.seed), random.Random(self.seed + 1)
        replies, beats, reply = [], [], bytearray()

        async def sender(ctx):
            for burst in bursts:
                for byte in burst:
                    await stream_put(ctx, link.rx, byte, rng=send_rng, valid=SEND)
                quiet = 0
                for _ in range(SETTLE):
                    *_, idle = await ctx.tick().sample(link.idle)
                    quiet += 1
                    if quiet > TIMEOUT and idle:
                        break
                else:
                    raise AssertionError(f"link did not settle after burst {burst.hex(' ')}")
                await ctx.tick()            # the receiver has stored the reply's last byte
                replies.append(bytes(reply))
                reply.clear()

        async def receiver(ctx):
            while True:
                reply.append(await stream_get(ctx, link.tx, rng=take_rng, ready=TAKE))

        async def engine_monitor(ctx):
            ei = link.engine_i
            async for *_, valid, ready, payload in ctx.tick().sample(ei.valid, ei.ready,
                                                                     ei.payload):
                if valid and ready:
                    beats.append(payload)

        sim = Simulator(self.m)
        sim.add_clock(1e-6)
        sim.add_testbench(sender)
        sim.add_testbench(receiver, background=True)
        sim.add_testbench(engine_monitor, background=True)
        sim.run()
        n = self.model.n_inputs
        assert len(beats) % n == 0, f"engine fed {len(beats)} values, not a multiple of {n}"
        return replies, [beats[k:k + n] for k in range(0, len(beats), n)]

    def expected(self, bursts):
        self.golden.fed = []
        return [self.golden.burst(burst) for burst in bursts], self.golden.fed


def injection_of(config, rate_bits):
    """The ErrorInjection an ERRORS payload sets (its thresholds are exact binary fractions)."""
    one = 1 << rate_bits
    return ErrorInjection(ErrorRates(config.t1 / one, config.t2 / one, config.t3 / one),
                          seed=config.seed, mode=protocol.MODES[config.mode], rate_bits=rate_bits)


def good_vector(seed):
    return np.random.default_rng(seed).integers(0, 1 << MODEL.input_bits, MODEL.n_inputs).tolist()


def reference_reply(values):
    trace = reference(MODEL, np.array(values))
    return protocol.infer_reply(int(trace.classes[0]), trace.scores[0].tolist(),
                                protocol.score_bytes(MODEL.score_bits))


# -- parameters --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"n_inputs": 0}, "n_inputs must be an integer from 1 to 65535, not 0"),
    ({"n_inputs": 65536}, "n_inputs must be an integer from 1 to 65535, not 65536"),
    ({"input_bits": 9}, "input_bits must be an integer from 1 to 8, not 9"),
    ({"n_classes": 257}, "n_classes must be an integer from 1 to 256, not 257"),
    ({"score_bits": 65}, "score_bits must be an integer from 1 to 64, not 65"),
    ({"score_bits": 8.0}, "score_bits must be an integer from 1 to 64, not 8.0"),
    ({"timeout": 0}, "timeout must be a positive integer number of cycles, not 0"),
    ({"timeout": 0.5}, "timeout must be a positive integer number of cycles, not 0.5"),
])
def test_parameters_are_validated(kwargs, message):
    args = {"n_inputs": 16, "input_bits": 4, "n_classes": 5, "score_bits": 14, "timeout": 100}
    args.update(kwargs)
    timeout = args.pop("timeout")
    refuses(lambda: HostLink(**args, timeout=timeout), ValueError, message)


def test_sizes_are_read_back():
    link = HostLink(16, 4, 5, 18, timeout=100)
    assert link.info == protocol.Info(2, 16, 5, 4, 3, 0)
    assert "errors" not in link.signature.members
    with_injector = HostLink(16, 4, 5, 18, timeout=100, rate_bits=12)
    assert with_injector.info.rate_bits == 12
    Fragment.get(with_injector, None)
    assert (link.request_bytes, link.reply_bytes) == (5 + 16, 5 + 1 + 5 * 3)
    assert link.rx.signature.members["payload"].shape == 8
    assert (link.signature.members["idle"], link.signature.members["receiving"]) == (
        wiring.Out(1), wiring.Out(1))
    Fragment.get(link, None)        # elaborates


@pytest.mark.parametrize("clk_freq, baud, timeout, message", [
    (1e6, 115200, 0.02, "baud 115200 is out of reach from clk_freq 1000000: the nearest "
                        "divisor 9 gives 111111 baud, 3.5% off (the limit is 2%)"),
    (12e6, 4e6, 0.02, "baud must be at most clk_freq / 4 = 3000000 (4 cycles per bit), not "
                      "4000000 at clk_freq 12000000"),
    (0, 115200, 0.02, "clk_freq must be a positive finite number (hertz), not 0"),
    (12e6, -1, 0.02, "baud must be a positive finite number (bits per second), not -1"),
    (12e6, 115200, 0.0001, "timeout must be at least 2 character times (0.000173333 s at baud "
                           "115200), not 0.0001"),
])
def test_host_top_checks_its_clocking(clk_freq, baud, timeout, message):
    refuses(lambda: HostTop(MODEL, clk_freq=clk_freq, baud=baud, timeout=timeout), ValueError,
            message)


def test_host_top_divisors_of_the_boards():
    assert uart_divisor(12e6, 115200) == 104           # iCEBreaker, 0.16 % off
    assert uart_divisor(25e6, 115200) == 217           # ULX3S, 0.01 % off
    # 1 Mbaud, the default: exact at both oscillators and at the PLL clocks the builds start at
    assert (uart_divisor(12e6, 1e6), uart_divisor(25e6, 1e6)) == (12, 25)
    assert (uart_divisor(42e6, 1e6), uart_divisor(112.5e6, 1e6)) == (42, 112)  # 0.4 % off
    top = HostTop(MODEL, clk_freq=42e6)
    assert (top.divisor, top.timeout_cycles) == (42, 840000)    # 20 ms of 42 MHz
    assert HostTop(MODEL, clk_freq=12e6, baud=115200).divisor == 104
    assert top.info == protocol.Info(2, 16, 5, 4, 3, 0)
    assert dict(top.signature.members.items()) == {
        "rx": wiring.In(1), "tx": wiring.Out(1), "idle": wiring.Out(1), "receiving": wiring.Out(1)}
    Fragment.get(top, None)         # elaborates


# -- good requests ------------------------------------------------------------------------------

def test_info_reply_bytes():
    bench = LinkBench()
    replies, fed = bench.run([protocol.info_request()])
    assert protocol.info_request() == bytes.fromhex("a5 01 00 00 6b")
    assert replies == [bytes.fromhex("a5 81 08 00 02 10 00 05 00 04 03 00 77")]
    assert fed == []


def test_infer_replies_equal_the_reference():
    top = (1 << MODEL.input_bits) - 1
    vectors = ([[0] * 16, [top] * 16, [top, 0] * 8]
               + [good_vector(seed) for seed in range(6)])
    bench = LinkBench()
    replies, fed = bench.run([protocol.infer_request(v) for v in vectors])
    trace = reference(MODEL, np.array(vectors))
    n_bytes = protocol.score_bytes(MODEL.score_bits)
    assert n_bytes == 3
    decoded = [protocol.decode_result(protocol.decode_frame(r)[1], MODEL.n_classes, n_bytes)
               for r in replies]
    assert [cls for cls, _ in decoded] == trace.classes.tolist()
    assert np.array_equal(np.array([scores for _, scores in decoded]), trace.scores)
    assert replies == [reference_reply(v) for v in vectors]
    assert fed == vectors
    assert (trace.scores < 0).any() and (trace.scores > 0).any()      # both signs on the link


def test_bytes_after_a_request_in_the_same_burst_are_discarded():
    x = good_vector(11)
    info = protocol.info_request()
    bursts = [info + protocol.infer_request(x),
              protocol.infer_request(x) + b"\x00\xa5\x01",
              info + bytes(150) + info,           # still arriving after the reply: drained
              protocol.infer_request(x)]
    bench = LinkBench()
    replies, fed = bench.run(bursts)
    info_reply = protocol.info_reply(bench.link.info)
    assert replies == [info_reply, reference_reply(x), info_reply, reference_reply(x)]
    assert fed == [x, x]
    assert (replies, fed) == bench.expected(bursts)


# -- bad requests -------------------------------------------------------------------------------

X = good_vector(1)
GOOD = protocol.infer_request(X)


def _with_value(index, value):
    values = list(X)
    values[index] = value
    return protocol.encode_frame(Command.INFER, bytes(values))


BAD_FRAMES = {
    "bad checksum": (GOOD[:-1] + bytes([GOOD[-1] ^ 0x01]), ErrorCode.BAD_CHECKSUM),
    "bad checksum on INFO": (bytes.fromhex("a5 01 00 00 6a"), ErrorCode.BAD_CHECKSUM),
    "payload one short": (protocol.encode_frame(Command.INFER, bytes(X[:-1])),
                          ErrorCode.BAD_LENGTH),
    "length high byte": (bytes([protocol.SYNC, Command.INFER, 16, 1]) + bytes(X),
                         ErrorCode.BAD_LENGTH),
    "INFO with a payload": (protocol.encode_frame(Command.INFO, b"\x00"), ErrorCode.BAD_LENGTH),
    "unknown command": (protocol.encode_frame(0x04), ErrorCode.BAD_COMMAND),
    "ERRORS without injector": (protocol.errors_request(protocol.ErrorsConfig(0, 0, 0, 1)),
                                ErrorCode.BAD_COMMAND),
    "reply command as request": (protocol.encode_frame(0x81), ErrorCode.BAD_COMMAND),
    "input 16 of 4 bits": (_with_value(5, 16), ErrorCode.BAD_VALUE),
    "input 255 last": (_with_value(15, 255), ErrorCode.BAD_VALUE),
    "truncated payload": (GOOD[:9], ErrorCode.TIMEOUT),
    "truncated before checksum": (GOOD[:-1], ErrorCode.TIMEOUT),
    "sync alone": (b"\xa5", ErrorCode.TIMEOUT),
}


def test_error_reply_bytes():
    assert protocol.error_reply(ErrorCode.BAD_CHECKSUM) == bytes.fromhex("a5 ff 01 00 04 a6")


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_bad_frame_gets_its_error_and_the_next_frame_is_answered(name):
    bad, code = BAD_FRAMES[name]
    bench = LinkBench(seed=len(name))
    replies, fed = bench.run([bad, GOOD])
    assert replies == [protocol.error_reply(code), reference_reply(X)]
    assert fed == [X]


def test_garbage_without_sync_gets_no_reply():
    garbage = bytes(b for b in np.random.default_rng(2).integers(0, 256, 40).tolist()
                    if b != protocol.SYNC)
    bench = LinkBench()
    replies, fed = bench.run([garbage, GOOD])
    assert replies == [b"", reference_reply(X)]
    assert fed == [X]


def _garbage(rng):
    """Random bytes, biased towards the bytes that start frames."""
    pool = [protocol.SYNC, Command.INFO, Command.INFER, 0x00, 0x10]
    out = bytearray()
    for _ in range(int(rng.integers(1, 30))):
        out.append(int(rng.choice(pool)) if rng.random() < 0.4 else int(rng.integers(0, 256)))
    if rng.random() < 0.3:                       # a valid frame's prefix, cut anywhere
        frame = protocol.infer_request(good_vector(int(rng.integers(1000))))
        out += frame[:int(rng.integers(1, len(frame) + 1))]
    return bytes(out)


def test_random_garbage_then_a_valid_frame():
    rng = np.random.default_rng(2024)
    bursts = []
    for trial in range(20):
        bursts += [_garbage(rng), protocol.infer_request(good_vector(100 + trial))]
    bench = LinkBench(seed=3)
    replies, fed = bench.run(bursts)
    expected_replies, expected_fed = bench.expected(bursts)
    assert replies == expected_replies
    assert fed == expected_fed
    for k in range(1, len(bursts), 2):
        assert replies[k] == reference_reply(list(bursts[k][4:-1]))
    codes = {r[4] for r in replies[::2] if r[1:2] == b"\xff"}
    assert len(codes) >= 3                  # the garbage hit several error classes


# -- fuzzing: the gateware's frame parser against its twin ----------------------------------------

def _near_frames():
    """Bursts near valid frames: a good INFO or INFER request with a few bytes flipped, cut or
    inserted, or plain bytes with SYNC among them."""
    good = [protocol.info_request(), protocol.infer_request(good_vector(7))]
    edit = st.tuples(st.sampled_from(["flip", "cut", "insert"]), st.integers(0, 63),
                     st.integers(0, 255))

    def apply(args):
        frame, edits = args
        out = bytearray(frame)
        for kind, at, value in edits:
            at %= max(len(out), 1)
            if kind == "flip" and out:
                out[at] ^= 1 << (value % 8)
            elif kind == "cut":
                del out[at:]
            else:
                out[at:at] = bytes([value])
        return bytes(out)

    mutated = st.tuples(st.sampled_from(good), st.lists(edit, max_size=3)).map(apply)
    noise = st.lists(st.sampled_from([protocol.SYNC, 0x01, 0x02, 0x00, 0xFF, 0x10]),
                     max_size=12).map(bytes)
    return mutated | noise


@settings(max_examples=int(os.environ.get("NMFLOW_FUZZ_EXAMPLES", "300")) // 10, deadline=None,
          derandomize=True)
@given(bursts=st.lists(_near_frames(), min_size=1, max_size=4))
def test_fuzzed_bursts_get_what_the_twin_answers(bursts):
    # Whatever arrives, the gateware answers each burst exactly as LinkModel does, feeds the
    # engine exactly the vectors LinkModel accepts, and is hunting again after every burst.
    bench = LinkBench(seed=len(bursts))
    replies, fed = bench.run(bursts)
    expected_replies, expected_fed = bench.expected(bursts)
    assert replies == expected_replies
    assert fed == expected_fed


# -- ERRORS: the injector's rates, seed and mode at run time ------------------------------------

RATE_BITS = 8
RESET = ErrorInjection(ErrorRates(0, 0, 0), seed=5, rate_bits=RATE_BITS)
ErrorsConfig = protocol.ErrorsConfig
ONE = 1 << RATE_BITS
BAD_ERRORS = {
    "t1 above one": ErrorsConfig(ONE + 1, 0, 0, 1),
    "t2 above one": ErrorsConfig(0, ONE + 1, 0, 1),
    "t3 above one": ErrorsConfig(0, 0, ONE + 1, 1),
    "t3 high byte": ErrorsConfig(0, 0, 1 << 24, 1),
    "t1 + t2 above one": ErrorsConfig(ONE // 2, ONE // 2 + 1, 0, 1),
    "seed 2**31": ErrorsConfig(0, 0, 0, 1 << 31),
    "mode 2": ErrorsConfig(0, 0, 0, 1, 2),
    "mode 0x80": ErrorsConfig(0, 0, 0, 1, 0x80),
}


def test_errors_link_parameters():
    refuses(lambda: HostLink(16, 4, 5, 14, timeout=100, rate_bits=3), ValueError,
            "rate_bits must be an integer from 4 to 27, not 3")
    link = HostLink(1, 4, 5, 14, timeout=100, rate_bits=RATE_BITS)
    assert link.signature.members["errors"].signature.always_ready
    Fragment.get(link, None)


def test_errors_refusals_are_the_twins():
    for name, config in BAD_ERRORS.items():
        assert config.problem(RATE_BITS) is not None, name
    frames = [protocol.errors_request(c) for c in BAD_ERRORS.values()]
    good = protocol.errors_request(ErrorsConfig(ONE, 0, ONE, 0x7FFFFFFF, 1))
    bursts = frames + [
        protocol.encode_frame(Command.ERRORS, bytes(16)),             # one byte short
        protocol.encode_frame(Command.ERRORS, bytes(18)),
        good[:-1] + bytes([good[-1] ^ 0x20]),                         # bad checksum
        good[:12],                                                    # truncated
        good]
    bench = LinkBench(seed=5, errors=RESET)
    replies, fed = bench.run(bursts)
    assert replies == [protocol.error_reply(ErrorCode.BAD_VALUE)] * len(BAD_ERRORS) + [
        protocol.error_reply(ErrorCode.BAD_LENGTH)] * 2 + [
        protocol.error_reply(ErrorCode.BAD_CHECKSUM), protocol.error_reply(ErrorCode.TIMEOUT),
        protocol.errors_reply()]
    assert (replies, fed) == bench.expected(bursts)
    assert bench.golden.configured == [ErrorsConfig(ONE, 0, ONE, 0x7FFFFFFF, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", [0, 1])
def test_errors_set_at_run_time_match_the_golden_twin(mode):
    vectors = [good_vector(seed) for seed in range(3)]
    config = ErrorsConfig(ONE // 16, ONE // 8, ONE // 8, 12345, mode)
    bursts = ([protocol.infer_request(vectors[0]), protocol.info_request(),
               protocol.errors_request(config)]
              + [protocol.infer_request(v) for v in vectors + vectors]
              + [protocol.errors_request(config), protocol.infer_request(vectors[0])])
    bench = LinkBench(seed=7, errors=RESET)
    replies, fed = bench.run(bursts)
    assert replies[1] == protocol.info_reply(protocol.Info(2, 16, 5, 4, 3, RATE_BITS))
    assert replies[2] == protocol.errors_reply()
    assert (replies, fed) == bench.expected(bursts)
    assert replies[0] == reference_reply(vectors[0])        # reset rates are 0
    assert replies[3:6] != [reference_reply(v) for v in vectors]    # the errors show
    assert replies[-1] == replies[3]                        # ERRORS restarts the sources
    if mode == 1:
        assert replies[3:6] == replies[6:9]                 # a static map


class WeightsBench(LinkBench):
    """HostLink and an engine whose weights are in SPRAM: WEIGHTS writes its rows; the twin
    infers from the memory image as written (all zero codes, 0 weights, before any write: the
    simulated SPRAM starts cleared)."""

    def __init__(self, model=MODEL, *, lanes=8, pe=2, seed=0):
        self.model, self.seed = model, seed
        self.engine = InferenceEngine(model, lanes=lanes, pe=pe, memory="spram")
        plan = self.engine.plan
        self.tail = protocol.WeightsInfo(plan.weight_rows, lanes, pe)
        self.link = HostLink(model.n_inputs, model.input_bits, model.n_classes, model.score_bits,
                             timeout=TIMEOUT, weights=self.tail)
        self.image = plan.memory_codes()
        self.memory = np.zeros_like(self.image)

        def infer(values):
            trace = reference(model, np.array(values, dtype=np.int64), lanes=lanes, pe=pe,
                              codes=self.memory)
            return int(trace.classes[0]), [int(s) for s in trace.scores[0]]

        def write(row, codes):
            self.memory[row] = codes

        self.golden = LinkModel(model.n_inputs, model.input_bits, model.n_classes,
                                model.score_bits, infer, weights=self.tail, write=write)
        self.m = Module()
        self.m.submodules.engine = self.engine
        self.m.submodules.link = self.link
        wiring.connect(self.m, self.link.engine_i, self.engine.i)
        wiring.connect(self.m, self.engine.o, self.link.engine_o)
        wiring.connect(self.m, self.link.weights, self.engine.weights)
        self.m.d.comb += self.link.engine_idle.eq(self.engine.idle)

    def expected(self, bursts):
        self.memory[:] = 0
        return super().expected(bursts)


def test_weights_link_parameters():
    tail = protocol.WeightsInfo(45, 8, 2)
    link = HostLink(16, 4, 5, 14, timeout=100, weights=tail)
    assert link.info == protocol.Info(protocol.WEIGHTS_VERSION, 16, 5, 4, 2, 0, None, tail)
    refuses(lambda: HostLink(16, 4, 5, 14, timeout=100, weights=protocol.WeightsInfo(0, 8)),
            ValueError, "weight rows must be 1 to 65535 on the link, not 0")
    refuses(lambda: HostLink(16, 4, 5, 14, timeout=100, weights=(45, 8)), TypeError,
            "weights must be a WeightsInfo, not tuple")


def test_weights_written_over_the_link_are_the_ones_the_engine_reads():
    bench = WeightsBench(seed=11)
    rows, lanes = bench.tail.rows, bench.tail.lanes
    rng = np.random.default_rng(4)
    vector = good_vector(1)
    other = rng.integers(0, 4, (rows, lanes))
    bursts = ([protocol.info_request(), protocol.infer_request(vector)]      # before any row
              + [protocol.weights_request(r, lanes, bench.image[r]) for r in range(rows)]
              + [protocol.infer_request(vector)]
              + [protocol.weights_request(r, lanes, other[r]) for r in range(0, rows, 3)]
              + [protocol.infer_request(vector),
                 protocol.weights_request(rows, lanes, other[0]),           # past the last row
                 protocol.encode_frame(Command.WEIGHTS, bytes(3)),           # one byte short
                 protocol.infer_request(vector)])
    replies, fed = bench.run(bursts)
    assert replies[0] == protocol.info_reply(bench.link.info)
    assert replies[2:2 + rows] == [protocol.weights_reply()] * rows
    assert replies[-3:-1] == [protocol.error_reply(ErrorCode.BAD_VALUE),
                              protocol.error_reply(ErrorCode.BAD_LENGTH)]
    assert (replies, fed) == bench.expected(bursts)
    # with every row loaded the board answers as the model; the rewritten rows change it
    loaded = replies[2 + rows]
    assert loaded == reference_reply(vector)
    assert replies[1] != loaded and replies[-1] != loaded
    assert len(bench.golden.written) == rows + len(range(0, rows, 3))


def test_weights_refused_by_a_link_without_them():
    bench = LinkBench(seed=3)
    burst = protocol.weights_request(0, 16, [1] * 16)
    replies, _ = bench.run([burst])
    assert replies == [protocol.error_reply(ErrorCode.BAD_COMMAND)] == bench.expected([burst])[0]
