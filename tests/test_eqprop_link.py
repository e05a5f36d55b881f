"""The EP unit's host link (nmflow/rtl/eqprop_link.py, protocol nmflow/protocol/eqprop.py):
the gateware's reply bytes against the plain-Python model (which computes with the fixed-point
twin) over random good and bad frames; a simulated board trained over its UART whose weights
read back equal the twin's; the ``nmflow eqprop sim|build|host`` refusals and a ``--port sim``
run (the hidden port value ``sim`` starts a simulated board)."""

import contextlib
import io
import json
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from nmflow.golden import eqprop_fixed as ef
from nmflow.golden.eqprop_board import EqPropBoardTwin
from nmflow.golden.eqprop_layout import EqPropLayout
from nmflow.protocol import CRC, SYNC, ErrorCode, decode_frame, encode_frame
from nmflow.protocol.eqprop import EqCommand, EqPropLinkModel, decode_info, encode_info
from nmflow.rtl.eqprop_link import EqPropLinkCore, link_geometry
from nmflow.scripts import cli
from nmflow.sim.streams import stream_put

CFG = ef.FixedEqPropConfig(sizes=(8, 8, 3), T=3, K=2, batch=1, lr_shifts=(1, 1), seed=3)
LANES = 4
BUFFER = 64                 # R = 7 weight rows per frame (of 24), RB = 11 biases
TIMEOUT = 40


def _u16(*values):
    return b"".join(int(v).to_bytes(2, "little") for v in values)


def _frames(rng, geometry):
    """Random bursts: good requests of every command and every kind of bad frame."""
    g, lay = geometry, EqPropLayout(geometry.sizes, geometry.lanes)
    R, RB = g.rows_per_frame, g.biases_per_frame
    out = []

    def words(n):
        return b"".join(int(v).to_bytes(2, "little", signed=True)
                        for v in rng.integers(-20000, 20000, n))

    for _ in range(70):
        kind = rng.integers(0, 16)
        x = bytes(int(v) for v in rng.integers(0, 256, g.n_inputs))
        if kind == 0:
            frame = encode_frame(EqCommand.INFO)
        elif kind in (1, 2, 3):
            frame = encode_frame(EqCommand.TRAIN, x + bytes([int(rng.integers(0, 3))]))
        elif kind == 4:
            frame = encode_frame(EqCommand.INFER, x)
        elif kind == 5:
            n = int(rng.integers(1, R + 1))
            frame = encode_frame(EqCommand.LOAD_W, _u16(rng.integers(0, lay.wdepth - n + 1))
                                 + words(n * LANES))
        elif kind == 6:
            n = int(rng.integers(1, RB + 1))
            frame = encode_frame(EqCommand.LOAD_B, _u16(rng.integers(0, lay.bdepth - n + 1))
                                 + words(n))
        elif kind == 7:         # binary units: the pair codes as often as the weights
            n = int(rng.integers(1, R + 1))
            read = EqCommand.READ_C if g.binary and rng.integers(0, 2) else EqCommand.READ_W
            frame = encode_frame(read, _u16(rng.integers(0, lay.wdepth - n + 1), n))
        elif kind == 8:
            n = int(rng.integers(1, RB + 1))
            frame = encode_frame(EqCommand.READ_B, _u16(rng.integers(0, lay.bdepth - n + 1), n))
        elif kind == 9:
            frame = encode_frame(EqCommand.SEED, int(rng.integers(0, 3)).to_bytes(4, "little"))
        elif kind == 10:        # bad values: label, count, past the end
            frame = [encode_frame(EqCommand.TRAIN, x + bytes([3 + int(rng.integers(0, 250))])),
                     encode_frame(EqCommand.READ_W, _u16(0, R + 1)),
                     encode_frame(EqCommand.READ_B, _u16(lay.bdepth - 1, 2)),
                     encode_frame(EqCommand.LOAD_W, _u16(lay.wdepth - 1) + words(2 * LANES)),
                     encode_frame(EqCommand.LOAD_B, _u16(lay.bdepth) + words(1)),
                     encode_frame(EqCommand.READ_W, _u16(0, 0)),
                     encode_frame(EqCommand.READ_C, _u16(lay.wdepth - 1, 2))][
                int(rng.integers(0, 7 if g.binary else 6))]
        elif kind == 11:        # wrong length
            cmd = int(rng.integers(0x31, 0x39))
            frame = encode_frame(cmd, bytes(int(rng.integers(0, 256))
                                            for _ in range(int(rng.integers(0, 12)))))
        elif kind == 12:        # corrupted CRC or payload byte
            frame = bytearray(encode_frame(EqCommand.INFER, x))
            frame[int(rng.integers(4, len(frame)))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 13:        # truncated: the link times out
            full = encode_frame(EqCommand.TRAIN, x + bytes([1]))
            frame = full[:int(rng.integers(1, len(full)))]
        elif kind == 14:        # an unknown command
            frame = encode_frame(int(rng.choice([0x00, 0x01, 0x30, 0x39, 0xB1, 0xFF])))
        else:                   # garbage before, after, or without a SYNC
            good = encode_frame(EqCommand.INFO)
            frame = [bytes([1, 2, 3]) + good, good + bytes([SYNC, 7]), bytes([0, 0x5A])][
                int(rng.integers(0, 3))]
        out.append(bytes(frame))
    return out


def _run_core(core, bursts, seed):
    """Each burst into the link (random gaps between bytes, never more than the timeout),
    then a quiet line until the link is idle; random backpressure on its replies."""
    rng = random.Random(seed)
    replies, current = [], bytearray()

    async def sink(ctx):
        async for _, _, valid, ready, payload in ctx.tick().sample(core.tx.valid, core.tx.ready,
                                                                   core.tx.payload):
            if valid and ready:
                current.append(payload)
            ctx.set(core.tx.ready, rng.random() < 0.7)

    async def source(ctx):
        for burst in bursts:
            for byte in burst:
                await stream_put(ctx, core.rx, byte, rng=rng, valid=0.5)
            quiet = 0
            while quiet < 3 * TIMEOUT:
                await ctx.tick()
                busy = not ctx.get(core.idle) or ctx.get(core.tx.valid)
                quiet = 0 if busy else quiet + 1
            replies.append(bytes(current))
            current.clear()

    sim = Simulator(core)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink, background=True)
    sim.run()
    return replies


def test_info_encoding_round_trips():
    g = link_geometry(CFG, LANES, BUFFER)
    assert decode_info(encode_info(g.info)) == g.info
    assert (g.rows_per_frame, g.biases_per_frame) == (7, 11)


BINARY = ef.FixedEqPropConfig(sizes=(8, 8, 3), T=3, K=2, batch=1, lr_shifts=(0, 1), seed=3,
                              weights="binary", m=5.0, decay_shift=3)


@pytest.mark.parametrize("cfg, storage", [(CFG, None), (BINARY, "spram")],
                         ids=["real", "binary with SPRAM hidden weights"])
def test_link_answers_like_the_model_over_random_frames(cfg, storage):
    # real weights: READ_C (0x39) is an unknown command; binary: it reads the pair codes, and
    # with SPRAM the hidden weights are 0 after reset while the codes are the initial ones
    core = EqPropLinkCore(cfg, LANES, timeout=TIMEOUT, buffer_bytes=BUFFER, storage=storage)
    model = EqPropLinkModel(link_geometry(cfg, LANES, BUFFER),
                            EqPropBoardTwin(cfg, LANES, storage=storage or "memory"))
    bursts = _frames(np.random.default_rng(5), core.geometry)
    got = _run_core(core, bursts, seed=6)
    codes = set()
    for n, (burst, reply) in enumerate(zip(bursts, got)):
        want = model.burst(burst)
        assert reply == want, (n, burst.hex(), reply.hex(), want.hex())
        if want:
            command, payload = decode_frame(want)
            if command == 0xFF:
                codes.add(ErrorCode(payload[0]))
    # the random frames reached every error and changed the weights
    assert codes == set(ErrorCode) - set(), codes
    assert any((w != w0).any() for w, w0 in zip(model.board.params["W"], ef.init_params(cfg)["W"]))
    if cfg.weights == "binary":
        read_codes = [b for b in bursts if b[1:2] == bytes([EqCommand.READ_C])]
        assert len(read_codes) > 2


def test_model_refuses_without_touching_the_weights():
    model = EqPropLinkModel(link_geometry(CFG, LANES, BUFFER), EqPropBoardTwin(CFG, LANES))
    before = [list(b) for b in model.board.banks]
    frame = bytearray(encode_frame(EqCommand.LOAD_W, _u16(0) + bytes(8)))
    frame[-1] ^= 0xFF
    assert decode_frame(model.burst(frame)) == (0xFF, bytes([ErrorCode.BAD_CHECKSUM]))
    assert model.board.banks == before
    assert CRC.compute(b"123456789") == 0xF4


def _train_three(link, cfg, twin, lfsr, rng, samples=3):
    """Three (``samples``) random training samples on the board and on the twin, the
    predictions compared; the twin's parameters after them and the last input."""
    for _ in range(samples):
        x, y = rng.integers(0, 256, 8), int(rng.integers(0, 3))
        prediction = link.train(x, y)
        twin, s_star = ef.train_step(cfg, twin, x.reshape(1, -1), [y], lfsr)
        assert prediction == int(s_star[-1][0].argmax())
    return twin, x


def test_simulated_board_trains_like_the_twin():
    from nmflow.boards.eqprop_host import EqPropLink
    from nmflow.sim.uart_bridge import eqprop_simulated_board

    rng = np.random.default_rng(2)
    params = ef.init_params(CFG)
    zero = {"W": [w * 0 for w in params["W"]], "b": [b * 0 for b in params["b"]]}
    twin, lfsr = params, ef.Lfsr32(CFG.lfsr_seed)
    with eqprop_simulated_board(CFG, lanes=LANES, params=zero) as url:
        with EqPropLink(url, timeout=60) as link:
            assert link.info().sizes == CFG.sizes
            link.load(params)
            twin, x = _train_three(link, CFG, twin, lfsr, rng)
            back = link.read()
            cls, states = link.infer(x)
    assert any((a != b).any() for a, b in zip(twin["W"], params["W"]))
    for k in range(2):
        assert (back["W"][k] == twin["W"][k]).all() and (back["b"][k] == twin["b"][k]).all()
    out = ef.free_phase(CFG, twin, x.reshape(1, -1))[-1][0]
    assert cls == int(out.argmax()) and states.tolist() == out.tolist()


def test_simulated_board_with_spram_hidden_weights_learns_like_the_twin():
    # binary weights, metaplastic, hidden weights in single-port RAMs as the iCEBreaker keeps
    # them: zero after reset, loaded over the link (LOAD_W writes the pair codes with them);
    # the update's chunk reads wait for its writes
    from nmflow.boards.eqprop_host import EqPropLink
    from nmflow.sim.uart_bridge import eqprop_simulated_board

    cfg = BINARY
    rng = np.random.default_rng(5)
    params = ef.init_params(cfg)
    twin, lfsr = params, ef.Lfsr32(cfg.lfsr_seed)
    with eqprop_simulated_board(cfg, lanes=LANES, storage="spram") as url:
        with EqPropLink(url, timeout=60) as link:
            link.load(params)
            twin, x = _train_three(link, cfg, twin, lfsr, rng)
            back = link.read()
            codes = link.read_codes()
            cls, states = link.infer(x)
    assert any(((a >= 0) != (b >= 0)).any() for a, b in zip(twin["W"], params["W"]))
    for k in range(2):
        assert (back["W"][k] == twin["W"][k]).all() and (back["b"][k] == twin["b"][k]).all()
        # PLUS (0b10) where W_h >= 0, MINUS (0b01) elsewhere
        assert (codes[k] == np.where(twin["W"][k] < 0, 0b01, 0b10)).all()
    # the inference reads the pair codes the updates wrote
    out = ef.free_phase(cfg, twin, x.reshape(1, -1))[-1][0]
    assert cls == int(out.argmax()) and states.tolist() == out.tolist()


# -- command line ------------------------------------------------------------------------------

def _cli(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    return code, err.getvalue().strip().splitlines()


@pytest.mark.parametrize("argv, words", [
    (["eqprop", "sim", "--samples", "x"], ["--samples", "'x'"]),
    (["eqprop", "sim", "--lanes", "3"], ["--lanes", "power of two"]),
    (["eqprop", "sim", "--hidden", "30"], ["--hidden", "multiple of lanes"]),
    (["eqprop", "sim", "--T", "70000"], ["--T", "from 1 to 10000", "'70000'"]),
    (["eqprop", "build", "--hidden", "200"], ["--hidden", "block RAMs"]),
    (["eqprop", "build", "--baud", "12000000"], ["--baud", "12000000"]),
    (["eqprop", "build", "--lr-shifts", "1"], ["--lr-shifts", "2 shifts"]),
    (["eqprop", "build", "--clock", "9"], ["--clock", "16.125 MHz", "not 9 MHz"]),
    (["eqprop", "build", "--clock", "fast"], ["--clock", "auto, board", "'fast'"]),
    (["eqprop", "host", "--port", "sim", "--K", "0"], ["--K", "'0'"]),
    (["eqprop", "host", "--port", "sim", "--timeout", "-1"], ["--timeout", "'-1'"]),
    (["eqprop", "host", "--port", "/dev/ttyNONE", "--samples", "1"], ["/dev/ttyNONE"]),
])
def test_cli_refuses_with_one_line(tmp_path, argv, words):
    code, lines = _cli(argv + ["--out", str(tmp_path / "o")])
    assert code == 2 and len(lines) == 1 and lines[0].startswith("nmflow: error: "), lines
    for word in words:
        assert word in lines[0], lines


def test_cli_host_against_a_simulated_board(tmp_path):
    code, lines = _cli(["eqprop", "host", "--port", "sim", "--hidden", "4", "--T", "2",
                        "--K", "1", "--samples", "2", "--out", str(tmp_path)])
    assert code == 0, lines
    report = json.loads((tmp_path / "board.json").read_text())
    assert report["equal"] and report["param_mismatches"] == 0 and report["samples"] == 2


@pytest.mark.slow
def test_cli_sim_checks_the_unit_against_the_twin(tmp_path):
    # Icarus + cocotb through the command, on a short schedule: every state, prediction and
    # weight of two training samples equal to the twin's.
    code = cli.main(["eqprop", "sim", "--out", str(tmp_path), "--samples", "2", "--T", "4",
                     "--K", "2"])
    report = json.loads((tmp_path / "eqprop_sim.json").read_text())
    assert code == 0, report
    assert report["passed"] is True and report["samples"] == 2
    assert report["final_param_mismatches"] == 0
