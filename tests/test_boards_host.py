# amaranth: UnusedElaboratable=no
"""The host driver, against scripted servers and against simulated gateware.

``EngineLink`` talks to ``HostTop`` running in Amaranth's simulator through
:func:`nmflow.sim.uart_bridge.simulated_board` (pyserial ``socket://``), and to small scripted TCP
servers for the failure paths that correct gateware never produces.
"""

import json
import re
import socket
import threading
import time

import numpy as np
import pytest
import serial

from nmflow import protocol
from nmflow.boards.host import EngineLink
from nmflow.errors import NmflowError
from nmflow.flow import host_step
from nmflow.golden import hwmodel
from nmflow.golden.injector import ErrorInjection, InjectedRead
from nmflow.golden.readerrors import ErrorRates
from nmflow.golden.reference import reference
from nmflow.protocol import Command, ErrorCode, Info
from nmflow.sim.uart_bridge import SimulatedBoard, simulated_board

from helpers import link_model


MODEL = link_model(seed=4)
INFO = Info(2, 16, 5, 4, 3)


# -- the driver against scripted servers --------------------------------------------------------

class ScriptedServer:
    """A loopback TCP server that records what it receives and answers each complete request
    frame with ``answer(frame)`` (bytes, possibly empty)."""

    def __init__(self, answer):
        self.answer = answer
        self.received = bytearray()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.05)
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        self.server.close()
        assert not self.thread.is_alive()

    def _run(self):
        conn = None
        while not self.stop.is_set() and conn is None:
            try:
                conn, _ = self.server.accept()
            except socket.timeout:
                pass
        if conn is None:
            return
        conn.settimeout(0.05)
        buffer = bytearray()
        with conn:
            while not self.stop.is_set():
                try:
                    data = conn.recv(4096)
                except socket.timeout:
                    continue
                if not data:
                    return
                self.received += data
                buffer += data
                while len(buffer) >= 4 and len(buffer) >= 5 + int.from_bytes(buffer[2:4], "little"):
                    n = 5 + int.from_bytes(buffer[2:4], "little")
                    conn.sendall(self.answer(bytes(buffer[:n])))
                    del buffer[:n]


def answer_info_then(infer_answer):
    def answer(frame):
        if frame[1] == Command.INFO:
            return protocol.info_reply(INFO)
        return infer_answer(frame)
    return answer


def test_timeout_when_nothing_answers():
    with ScriptedServer(lambda frame: b"") as server:
        with EngineLink(server.url, timeout=0.3) as link:
            start = time.monotonic()
            with pytest.raises(NmflowError, match=f"^no complete reply from "
                                                  f"{re.escape(repr(server.url))} within 0.3 s$"):
                link.info()
            assert time.monotonic() - start < 1.5
    assert bytes(server.received) == protocol.info_request()


def test_a_silent_serial_line_names_the_baud_rate():
    """On a real serial line (a pseudo-terminal here) silence may be a baud mismatch: the error
    says which rate the host used and that the bitstream's must be the same."""
    import os
    master, slave = os.openpty()
    try:
        with EngineLink(os.ttyname(slave), baudrate=115200, timeout=0.3) as link:
            with pytest.raises(NmflowError, match=r"^no complete reply from '/dev/pts/\d+' within "
                                                  r"0\.3 s at 115200 baud \(the bitstream's must "
                                                  r"be the same: 'nmflow build --baud', 1000000 by "
                                                  r"default\)$"):
                link.info()
        assert os.read(master, 64) == protocol.info_request()
    finally:
        os.close(master)
        os.close(slave)


def test_timeout_on_a_reply_cut_short():
    reply = protocol.info_reply(INFO)
    with ScriptedServer(lambda frame: reply[:-3]) as server:
        with EngineLink(server.url, timeout=0.3) as link:
            with pytest.raises(NmflowError, match=r"^no complete reply from .* within 0.3 s$"):
                link.info()


def test_corrupted_reply_is_refused():
    reply = bytearray(protocol.info_reply(INFO))
    reply[6] ^= 0x04                                    # n_classes 5 -> 1, CRC unchanged
    with ScriptedServer(lambda frame: b"\x00\x13" + bytes(reply)) as server:
        with EngineLink(server.url, timeout=1.0) as link:
            with pytest.raises(NmflowError, match=f"^corrupted reply from "
                                                  f"{re.escape(repr(server.url))}: frame checksum "
                                                  f"must be 0x[0-9A-F]{{2}}, not 0x77$"):
                link.info()


def test_error_reply_raises_with_its_code():
    answer = answer_info_then(lambda frame: protocol.error_reply(ErrorCode.BAD_VALUE))
    with ScriptedServer(answer) as server:
        with EngineLink(server.url, timeout=1.0) as link:
            with pytest.raises(NmflowError, match=r"^board replied with error BAD_VALUE \(a payload "
                                                  r"value is out of range\) to INFER$"):
                link.infer([0] * 16)


def test_wrong_reply_command_and_version_are_refused():
    with ScriptedServer(answer_info_then(lambda frame: protocol.info_reply(INFO))) as server:
        with EngineLink(server.url, timeout=1.0) as link:
            with pytest.raises(NmflowError, match=r"^reply command must be 0x82 \(INFER\), "
                                                  r"not 0x81$"):
                link.infer([0] * 16)
    v1 = Info(1, 16, 5, 4, 3)
    with ScriptedServer(lambda frame: protocol.info_reply(v1)) as server:
        with EngineLink(server.url, timeout=1.0) as link:
            with pytest.raises(NmflowError, match=r"^board protocol version must be one of 2, 4, "
                                                  r"5, 6, not 1 "):
                link.info()


@pytest.mark.parametrize("values, message", [
    ([0] * 15, "values must have shape [16] (n_inputs = 16), not [15]"),
    ([[0] * 16], "values must have shape [16] (n_inputs = 16), not [1, 16]"),
    ([0] * 15 + [16], "values must hold unsigned 4-bit integers (0 to 15), not 16"),
    ([-1] + [0] * 15, "values must hold unsigned 4-bit integers (0 to 15), not -1"),
    ([0.5] * 16, "values must hold integers, not float64"),
])
def test_bad_inputs_are_refused_before_sending(values, message):
    answer = answer_info_then(lambda frame: protocol.infer_reply(0, [0] * 5, 3))
    with ScriptedServer(answer) as server:
        with EngineLink(server.url, timeout=1.0) as link:
            with pytest.raises(NmflowError, match=f"^{re.escape(message)}$"):
                link.infer(values)
            with pytest.raises(NmflowError, match=r"^array must have shape \[N, 16\] "):
                link.infer_many(np.zeros((2, 17), dtype=np.int64))
            time.sleep(0.1)
    assert bytes(server.received) == protocol.info_request()


def test_driver_parameters_and_unreachable_port():
    with pytest.raises(NmflowError,
                       match=r"^timeout must be a positive finite number \(seconds\), not 0$"):
        EngineLink("socket://127.0.0.1:9", timeout=0)
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()                                       # nobody listens there now
    with pytest.raises(NmflowError, match=f"^cannot open port 'socket://127.0.0.1:{port}': "):
        EngineLink(f"socket://127.0.0.1:{port}")


# -- the driver against the simulated gateware --------------------------------------------------

@pytest.fixture(scope="module")
def board():
    with SimulatedBoard.engine(MODEL, lanes=16, divisor=4) as simulated:
        yield simulated
    assert simulated.frame_errors == 0


def test_info_from_the_gateware(board):
    with EngineLink(board.url, timeout=10) as link:
        assert link.info() == INFO


def test_infer_matches_the_reference(board):
    rng = np.random.default_rng(8)
    vectors = np.concatenate([[[0] * 16, [15] * 16], rng.integers(0, 16, (3, 16))])
    trace = reference(MODEL, vectors)
    with EngineLink(board.url, timeout=10) as link:
        for x, cls, scores in zip(vectors, trace.classes, trace.scores):
            got_cls, got_scores = link.infer(x.tolist())
            assert got_cls == cls
            assert got_scores.tolist() == scores.tolist()
        classes, scores = link.infer_many(vectors[2:])
    assert classes.tolist() == trace.classes[2:].tolist()
    assert np.array_equal(scores, trace.scores[2:])


def test_gateware_error_reply_then_good_request(board):
    x = [7] * 16
    with serial.serial_for_url(board.url, timeout=0.1) as port:
        port.write(protocol.infer_request(x)[:10])             # stops mid-way: TIMEOUT
        reply = bytearray()
        deadline = time.monotonic() + 10
        while len(reply) < 6 and time.monotonic() < deadline:
            reply += port.read(6 - len(reply))
        assert bytes(reply) == protocol.error_reply(ErrorCode.TIMEOUT)
        port.write(protocol.infer_request(x))
        reply = bytearray()
        while len(reply) < 21 and time.monotonic() < deadline:
            reply += port.read(21 - len(reply))
    trace = reference(MODEL, np.array(x))
    assert bytes(reply) == protocol.infer_reply(int(trace.classes[0]), trace.scores[0].tolist(), 3)


def test_simulated_board_stops_cleanly():
    small = link_model(seed=9, sizes=(4, 3), input_bits=2)
    start = time.monotonic()
    with simulated_board(small, lanes=4, divisor=5) as url:
        with EngineLink(url, timeout=10) as link:
            assert link.info() == Info(2, 4, 3, 2, protocol.score_bytes(small.score_bits))
            cls, scores = link.infer([3, 0, 1, 2])
    trace = reference(small, np.array([3, 0, 1, 2]))
    assert (cls, scores.tolist()) == (trace.classes[0], trace.scores[0].tolist())
    assert time.monotonic() - start < 30
    port = url.rsplit(":", 1)[1]
    assert [t.name for t in threading.enumerate() if t.name.endswith(f"-{port}")] == []


# -- read errors set at run time ----------------------------------------------------------------

ERRORS = ErrorInjection(ErrorRates(0.02, 0.05, 0.1), seed=77, rate_bits=8)


def test_set_errors_is_refused_by_a_board_without_injector(board):
    with EngineLink(board.url, timeout=10) as link:
        with pytest.raises(NmflowError, match=f"^the board at {re.escape(board.url)} has no "
                                              f"read-error injector: build it with --errors "):
            link.set_errors(ERRORS)


def test_set_errors_sends_the_thresholds_and_reports_refusals():
    with_injector = Info(2, 16, 5, 4, 3, 8)

    def answer(frame):
        if frame[1] == Command.INFO:
            return protocol.info_reply(with_injector)
        return protocol.error_reply(ErrorCode.BAD_VALUE)
    with ScriptedServer(answer) as server:
        with EngineLink(server.url, timeout=1.0) as link:
            with pytest.raises(NmflowError, match=r"^the board's injector has rate_bits 8, not "
                                                  r"16: give --rate-bits 8$"):
                link.set_errors(ErrorInjection(ErrorRates(0, 0.01, 0)))
            with pytest.raises(NmflowError, match=r"^board replied with error BAD_VALUE \(a "
                                                  r"payload value is out of range\) to ERRORS$"):
                link.set_errors(ERRORS)
    t1, t12, t3 = ERRORS.thresholds()
    assert bytes(server.received).endswith(protocol.errors_request(
        protocol.ErrorsConfig(t1, t12 - t1, t3, 77, 0)))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["per_read", "static"])
def test_host_step_with_errors_set_at_run_time(tmp_path, mode):
    # The board is built with an injector making no errors; `nmflow host --errors` sets rates,
    # seed and mode over the link and the golden model reads through InjectedRead, in order.
    errors = ErrorInjection(ERRORS.rates, seed=77, mode=mode, rate_bits=8)
    hwmodel.save(MODEL, tmp_path / "hwmodel")
    x = np.random.default_rng(3).integers(0, 16, size=(6, 16))
    np.savez(tmp_path / "x.npz", x=x)
    reset = ErrorInjection(ErrorRates(0, 0, 0), seed=3, rate_bits=8)
    with simulated_board(MODEL, lanes=16, divisor=4, errors=reset) as url:
        with EngineLink(url, timeout=30) as link:
            assert link.info() == Info(2, 16, 5, 4, 3, 8)
            clean = link.infer_many(x[:2])          # the reset rates: no errors
        result = host_step(tmp_path, url, inputs=tmp_path / "x.npz", timeout=30, errors=errors,
                           lanes=16)
        assert result["mismatches"] == 0 and result["images"] == 6
        assert result["errors"] == dict(errors.to_dict(), lanes=16, pe=1)
        again = host_step(tmp_path, url, inputs=tmp_path / "x.npz", timeout=30, errors=errors,
                          lanes=16, out=tmp_path / "again.json")
        assert again["mismatches"] == 0                 # ERRORS restarted the sources
    golden = reference(MODEL, x)
    assert clean[1].tolist() == golden.scores[:2].tolist()
    injected = reference(MODEL, x, read=InjectedRead(errors, 16))
    assert not np.array_equal(injected.scores, golden.scores)      # the errors show
    assert json.loads((tmp_path / "board.json").read_text())["mismatches"] == 0


@pytest.mark.slow
def test_host_step_with_errors_on_a_board_without_injector(board, tmp_path):
    hwmodel.save(MODEL, tmp_path / "hwmodel")
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 16), dtype=int))
    with pytest.raises(NmflowError, match=r"^the board at .* has no read-error injector: "):
        host_step(tmp_path, board.url, inputs=tmp_path / "x.npz", timeout=10, errors=ERRORS)


@pytest.mark.slow
def test_host_step_without_errors_reads_a_board_with_injector_ideally(tmp_path):
    # A board built with non-zero reset rates: `nmflow host` without --errors sets its rates to 0
    # first, so it is compared with the clean golden model and matches it.
    built = ErrorInjection(ErrorRates(0.1, 0.1, 0.3), seed=5, rate_bits=8)
    hwmodel.save(MODEL, tmp_path / "hwmodel")
    x = np.random.default_rng(4).integers(0, 16, size=(4, 16))
    np.savez(tmp_path / "x.npz", x=x)
    with simulated_board(MODEL, lanes=16, divisor=4, errors=built) as url:
        with EngineLink(url, timeout=30) as link:
            _, as_built = link.infer_many(x[:1])         # the reset rates make errors
        result = host_step(tmp_path, url, inputs=tmp_path / "x.npz", timeout=30)
    golden = reference(MODEL, x)
    assert as_built.tolist() != golden.scores[:1].tolist()
    assert result["mismatches"] == 0 and result["errors"] is None


def test_host_step_loads_the_weights_of_a_board_with_spram(tmp_path):
    # A board whose weights are in SPRAM starts empty (INFO version 5 with rows, lanes and pe):
    # `nmflow host` writes every row of the model first, then its answers are the model's.
    hwmodel.save(MODEL, tmp_path / "hwmodel")
    x = np.random.default_rng(6).integers(0, 16, size=(3, 16))
    np.savez(tmp_path / "x.npz", x=x)
    golden = reference(MODEL, x)
    with simulated_board(MODEL, lanes=8, pe=2, divisor=4, memory="spram") as url:
        with EngineLink(url, timeout=30) as link:
            info = link.info()
            # 16-12-8-5 over simd 4, pe 2: 4 * 6 + 3 * 4 + 2 * 3 rows
            assert (info.version, info.weights) == (5, protocol.WeightsInfo(42, 8, 2))
            _, empty = link.infer_many(x[:1])           # before the rows: all weights 0
        assert empty.tolist() != golden.scores[:1].tolist()
        result = host_step(tmp_path, url, inputs=tmp_path / "x.npz", timeout=30)
    assert result["weight_rows_written"] == 42
    assert result["mismatches"] == 0 and result["images"] == 3


def test_writing_weights_to_a_board_that_holds_them_is_refused(board):
    with EngineLink(board.url, timeout=10) as link:
        with pytest.raises(NmflowError, match=r"^the board at .* holds its weights in its "
                                              r"bitstream: nothing to write$"):
            link.write_weights(MODEL)


def test_host_step_runs_batches_on_a_board_with_a_batch_memory(tmp_path):
    # A board with a batch memory (INFO version 6) runs the vectors back to back, capacity at a
    # time, and times each batch with its cycle counter: `nmflow host` reports the engine's rate
    # as the board measured it, which the plan predicts to the cycle (one more: the register
    # between the link and the engine).
    from nmflow.golden.plan import EnginePlan
    from nmflow.rtl.top import HostTop
    from nmflow.sim.uart_bridge import SIM_CLOCK_HZ
    hwmodel.save(MODEL, tmp_path / "hwmodel")
    x = np.random.default_rng(8).integers(0, 16, size=(7, 16))
    np.savez(tmp_path / "x.npz", x=x)
    top = HostTop(MODEL, lanes=8, pe=2, clk_freq=SIM_CLOCK_HZ, baud=SIM_CLOCK_HZ / 4, batch=3)
    plan = EnginePlan(MODEL, 8, pe=2)
    assert [top.batch_cycles(k) for k in (1, 3)] == [plan.cycles_per_inference + 1,
                                                     plan.cycles_per_inference
                                                     + 2 * plan.interval_cycles + 1]
    with simulated_board(MODEL, lanes=8, pe=2, divisor=4, batch=3,
                         batch_memory="spram") as url:
        with EngineLink(url, timeout=30) as link:
            assert link.info().batch == protocol.BatchInfo(3, SIM_CLOCK_HZ)
            classes, scores, cycles = link.infer_batches(x[:2])
            golden = reference(MODEL, x[:2])
            assert classes.tolist() == golden.classes.tolist()
            assert scores.tolist() == golden.scores.tolist()
            assert cycles == [top.batch_cycles(2)]
        result = host_step(tmp_path, url, inputs=tmp_path / "x.npz", timeout=30)
        single = host_step(tmp_path, url, inputs=tmp_path / "x.npz", timeout=30, batch=False)
    assert result["mismatches"] == 0 == single["mismatches"] and result["images"] == 7
    assert result["batches"] == 3 and result["batch_capacity"] == 3
    assert result["board_cycles"] == [top.batch_cycles(3)] * 2 + [top.batch_cycles(1)]
    seconds = (2 * top.batch_cycles(3) + top.batch_cycles(1)) / SIM_CLOCK_HZ
    assert result["board_images_per_second"] == round(7 / seconds, 1)
    assert single["batches"] is None and single["board_images_per_second"] is None


def test_batches_refused_by_a_board_without_a_batch_memory(board):
    with EngineLink(board.url, timeout=10) as link:
        with pytest.raises(NmflowError, match=r"^the board at .* has no batch memory: build it "
                                              r"with --batch to run batches on the board$"):
            link.infer_batches(np.zeros((2, 16), dtype=int))
