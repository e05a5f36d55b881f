"""The host link protocol: its enumerations, its CRC (software and gateware), frames, payloads and
the golden twin :class:`~nmflow.protocol.LinkModel`."""

import random
import re

import pytest
from amaranth.hdl import Module, Shape, Signal, unsigned
from amaranth.sim import Simulator

from nmflow import protocol
from nmflow.errors import NmflowError
from nmflow.protocol import Command, ErrorCode, Info, LinkModel, Reply

INFO = Info(2, 16, 5, 4, 3)


# -- the shared enumerations -------------------------------------------------------------------

def test_enums_are_bytes_on_the_host_and_in_the_gateware():
    for enum in (Command, Reply, ErrorCode):
        assert Shape.cast(enum) == unsigned(8)
    assert bytes([Command.INFER, Reply.ERROR, ErrorCode.TIMEOUT]) == b"\x02\xff\x05"
    assert ErrorCode(4) is ErrorCode.BAD_CHECKSUM
    assert Signal(ErrorCode, init=ErrorCode.TIMEOUT).init == 5

    byte, is_infer = Signal(8), Signal()
    m = Module()
    m.d.comb += is_infer.eq(byte == Command.INFER)
    seen = []

    async def tb(ctx):
        for value in (Command.INFO, Command.INFER, Reply.INFER):
            ctx.set(byte, value)
            seen.append(ctx.get(is_infer))

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    assert seen == [0, 1, 0]


# -- the CRC: one description, two faces -------------------------------------------------------

def test_crc_check_value():
    assert protocol.CRC.compute(b"123456789") == 0xF4           # CRC-8/SMBUS check value
    assert protocol.CRC.compute(b"") == 0


def test_crc_gateware_equals_software():
    rng = random.Random(5)
    frames = [b"123456789", bytes(range(256))] + [rng.randbytes(rng.randrange(1, 40))
                                                  for _ in range(20)]
    dut = protocol.CRC.create()
    got = []

    async def tb(ctx):
        for frame in frames:
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.valid, 1)
            for byte in frame:
                ctx.set(dut.data, byte)
                await ctx.tick()
            ctx.set(dut.valid, 0)
            got.append(ctx.get(dut.crc))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got == [protocol.CRC.compute(frame) for frame in frames]


# -- frames and payloads -----------------------------------------------------------------------

def test_frames():
    frame = protocol.encode_frame(Command.INFER, bytes(range(16)))
    assert frame[:4] == bytes([0xA5, 0x02, 16, 0]) and len(frame) == 21
    assert frame[-1] == protocol.CRC.compute(frame[1:-1])
    assert protocol.decode_frame(frame) == (Command.INFER, bytes(range(16)))
    assert protocol.decode_frame(protocol.encode_frame(0x81, b"x" * 300)) == (0x81, b"x" * 300)
    assert protocol.info_request() == bytes.fromhex("a5 01 00 00 6b")
    assert protocol.error_reply(ErrorCode.BAD_CHECKSUM) == bytes.fromhex("a5 ff 01 00 04 a6")


def test_the_examples_of_the_contract():
    # docs/contracts.md, 5.8
    assert protocol.info_request().hex(" ") == "a5 01 00 00 6b"
    assert protocol.info_reply(Info(2, 64, 10, 5, 4, 16)).hex(" ") == (
        "a5 81 08 00 02 40 00 0a 00 05 04 10 a1")
    assert protocol.infer_request([3, 0, 16, 7]).hex(" ") == "a5 02 04 00 03 00 10 07 65"
    assert protocol.errors_request(protocol.ErrorsConfig(0, 655, 4260, 7, 0)).hex(" ") == (
        "a5 03 11 00 00 00 00 00 8f 02 00 00 a4 10 00 00 07 00 00 00 00 37")
    assert protocol.errors_reply().hex(" ") == "a5 83 00 00 b6"
    assert protocol.infer_reply(2, [-5, 300], 2).hex(" ") == "a5 82 05 00 02 fb ff 2c 01 00"
    assert protocol.info_reply(Info(4, 64, 10, 5, 4, 0, protocol.MetaplasticInfo(
        2, 12928, 16, 12, 16, 15, 16, 1))).hex(" ") == (
        "a5 81 12 00 04 40 00 0a 00 05 04 00 02 80 32 10 0c 10 0f 10 00 01 db")
    version5 = Info(5, 784, 10, 8, 2, 0, None, protocol.WeightsInfo(8528, 32, 1))
    assert protocol.info_reply(version5).hex(" ") == (
        "a5 81 0d 00 05 10 03 0a 00 08 02 00 50 21 20 00 01 27")
    assert protocol.decode_info(bytes.fromhex("05 10 03 0a 00 08 02 00 50 21 20 00 01")) \
        == version5
    assert protocol.weights_request(2, 4, [0b10, 0b01, 0b00, 0b11]).hex(" ") == (
        "a5 07 03 00 02 00 c6 f3")
    assert protocol.weights_reply().hex(" ") == "a5 87 00 00 1d"
    version6 = Info(6, 64, 10, 5, 2, 0, batch=protocol.BatchInfo(256, 42_000_000))
    assert protocol.info_reply(version6).hex(" ") == (
        "a5 81 0f 00 06 40 00 0a 00 05 02 00 04 00 01 80 de 80 02 bf")
    both = Info(6, 784, 10, 8, 2, 0, weights=protocol.WeightsInfo(8528, 32, 1),
                batch=protocol.BatchInfo(32, 38_250_000))
    assert protocol.info_reply(both).hex(" ") == (
        "a5 81 14 00 06 10 03 0a 00 08 02 00 06 50 21 20 00 01 20 00 10 a6 47 02 3c")
    assert protocol.decode_info(protocol.decode_frame(protocol.info_reply(both))[1]) == both
    assert protocol.batch_request([[3, 0, 16, 7], [1, 2, 3, 4]]).hex(" ") == (
        "a5 08 08 00 03 00 10 07 01 02 03 04 d0")
    assert protocol.batch_reply(1234, [(2, [-5, 300]), (0, [7, -1])], 2).hex(" ") == (
        "a5 88 0e 00 d2 04 00 00 02 fb ff 2c 01 00 07 00 ff ff 10")
    assert [protocol.error_reply(code).hex(" ") for code in ErrorCode] == [
        "a5 ff 01 00 01 bd", "a5 ff 01 00 02 b4", "a5 ff 01 00 03 b3", "a5 ff 01 00 04 a6",
        "a5 ff 01 00 05 a1"]
    frame = protocol.infer_request([3, 0, 16, 7])
    assert protocol.CRC.compute(frame[1:]) == protocol.CRC.residue() == 0


@pytest.mark.parametrize("command, payload, message", [
    (256, b"", "command must be a byte (0 to 255), not 256"),
    (Command.INFER, bytes(65536), "payload must be at most 65535 bytes long, not 65536"),
])
def test_encode_frame_refuses_bad_arguments(command, payload, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        protocol.encode_frame(command, payload)


@pytest.mark.parametrize("frame, message", [
    (bytes.fromhex("5a 01 00 00 6b"),
     "frame must start with the sync byte 0xA5 and hold at least 5 bytes, not 5a 01 00 00 6b"),
    (bytes.fromhex("a5 01 00"),
     "frame must start with the sync byte 0xA5 and hold at least 5 bytes, not a5 01 00"),
    (bytes.fromhex("a5 01 01 00 6b"), "frame must hold 6 bytes (LEN = 1), not 5"),
    (bytes.fromhex("a5 01 00 00 6c"), "frame checksum must be 0x6B, not 0x6C"),
])
def test_decode_frame_refuses_bad_frames(frame, message):
    with pytest.raises(NmflowError, match=f"^{re.escape(message)}$"):
        protocol.decode_frame(frame)


def test_info_and_result_payloads():
    assert protocol.encode_info(INFO) == bytes([2, 16, 0, 5, 0, 4, 3, 0])
    assert protocol.decode_info(bytes([2, 16, 0, 5, 0, 4, 3, 12])).rate_bits == 12
    assert protocol.decode_info(protocol.encode_info(INFO)) == INFO
    assert INFO.infer_reply_length == 16
    payload = protocol.encode_result(2, [-1, 0, 8388607, -8388608, 300], 3)
    assert payload[:7] == bytes([2, 0xFF, 0xFF, 0xFF, 0, 0, 0])
    assert protocol.decode_result(payload, 5, 3) == (2, [-1, 0, 8388607, -8388608, 300])
    assert [protocol.score_bytes(b) for b in (1, 8, 9, 16, 17, 64)] == [1, 1, 2, 2, 3, 8]
    with pytest.raises(NmflowError, match=r"^INFER reply payload must hold 16 bytes, not 15$"):
        protocol.decode_result(payload[:-1], 5, 3)
    with pytest.raises(NmflowError, match=r"^INFO reply payload must hold 8 bytes, not 7$"):
        protocol.decode_info(bytes(7))


# -- the golden twin ---------------------------------------------------------------------------

def test_link_model_bursts():
    calls = []

    def infer(values):
        calls.append(values)
        return 1, [10, -20, 30, 0, 5]

    lm = LinkModel(16, 4, 5, 20, infer)
    good = protocol.infer_request(range(16))
    err = protocol.error_reply
    assert lm.burst(b"\x00\x01\x02") == b""
    assert lm.burst(b"\x00" + protocol.info_request() + b"\xa5\x07") == protocol.info_reply(INFO)
    assert lm.burst(b"\xa5\x09") == err(ErrorCode.BAD_COMMAND)
    assert lm.burst(b"\xa5\x02\x10") == err(ErrorCode.TIMEOUT)
    assert lm.burst(b"\xa5\x02\x10\x01") == err(ErrorCode.BAD_LENGTH)
    assert lm.burst(good[:6] + b"\x10") == err(ErrorCode.BAD_VALUE)
    assert lm.burst(good[:-1] + b"\x00") == err(ErrorCode.BAD_CHECKSUM)
    assert calls == []
    assert lm.burst(good + good) == protocol.infer_reply(1, [10, -20, 30, 0, 5], 3)
    assert calls == [list(range(16))] and lm.fed == [list(range(16))]


# -- ERRORS ------------------------------------------------------------------------------------

def test_errors_payload():
    config = protocol.ErrorsConfig(1, 0x0203, 65536, 0x7FFFFFFF, 1)
    payload = protocol.encode_errors(config)
    assert payload.hex(" ") == ("01 00 00 00 03 02 00 00 00 00 01 00 ff ff ff 7f 01")
    assert len(payload) == protocol.ERRORS_BYTES
    assert protocol.decode_errors(payload) == config
    assert protocol.errors_request(config)[:4] == bytes([0xA5, 0x03, 17, 0])
    assert protocol.errors_reply() == protocol.encode_frame(0x83)
    with pytest.raises(NmflowError, match=r"^ERRORS payload must hold 17 bytes, not 16$"):
        protocol.decode_errors(payload[:-1])


@pytest.mark.parametrize("config, problem", [
    ((257, 0, 0, 1, 0), "t1 must be at most 2**rate_bits = 256, not 257"),
    ((0, 257, 0, 1, 0), "t2 must be at most 2**rate_bits = 256, not 257"),
    ((0, 0, 1 << 31, 1, 0), "t3 must be at most 2**rate_bits = 256, not 2147483648"),
    ((128, 129, 0, 1, 0), "t1 + t2 must be at most 2**rate_bits = 256, not 257"),
    ((0, 0, 0, 1 << 31, 0), "seed must be below 2**31, not 2147483648"),
    ((0, 0, 0, 1, 2), "mode must be 0 (per_read) or 1 (static), not 2"),
    ((128, 128, 256, (1 << 31) - 1, 1), None),
])
def test_errors_ranges(config, problem):
    assert protocol.ErrorsConfig(*config).problem(8) == problem


def test_link_model_errors():
    configured = []
    good = protocol.ErrorsConfig(0, 16, 32, 99, 1)
    plain = LinkModel(16, 4, 5, 20, lambda values: (0, [0] * 5))
    assert plain.burst(protocol.errors_request(good)) == protocol.error_reply(
        ErrorCode.BAD_COMMAND)
    lm = LinkModel(16, 4, 5, 20, lambda values: (0, [0] * 5), rate_bits=8,
                   configure=configured.append)
    err = protocol.error_reply
    assert lm.burst(protocol.info_request()) == protocol.info_reply(Info(2, 16, 5, 4, 3, 8))
    assert lm.burst(protocol.encode_frame(Command.ERRORS, bytes(16))) == err(
        ErrorCode.BAD_LENGTH)
    bad = protocol.errors_request(protocol.ErrorsConfig(0, 0, 0, 1, 2))
    assert lm.burst(bad) == err(ErrorCode.BAD_VALUE)
    assert lm.burst(bad[:-1] + bytes([bad[-1] ^ 1])) == err(ErrorCode.BAD_CHECKSUM)
    assert lm.burst(bad[:-1]) == err(ErrorCode.TIMEOUT)
    assert configured == [] and lm.configured == []
    assert lm.burst(protocol.errors_request(good)) == protocol.errors_reply()
    assert configured == [good] and lm.configured == [good] and lm.fed == []
