"""The host driver, against scripted servers and against simulated gateware.

``EngineLink`` talks to ``HostTop`` running in Amaranth's simulator through
:func:`nmflow.sim.uart_bridge.simulated_board` (pyserial ``socket://``), and to small scripted TCP
servers for the failure paths that correct gateware never produces.
"""

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
from nmflow.golden.reference import reference
from nmflow.protocol import Command, ErrorCode, Info
from nmflow.sim.uart_bridge import SimulatedBoard, simulated_board

from helpers import link_model


MODEL = link_model(seed=4)
INFO = Info(1, 16, 5, 4, 3)


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
                                                  f"must be 0x[0-9A-F]{{2}}, not 0xDE$"):
                link.info()


def test_error_reply_raises_with_its_code():
    answer = answer_info_then(lambda frame: protocol.error_reply(ErrorCode.BAD_VALUE))
    with ScriptedServer(answer) as server:
        with EngineLink(server.url, timeout=1.0) as link:
            with pytest.raises(NmflowError, match=r"^board replied with error BAD_VALUE \(an input "
                                                  r"value does not fit input_bits\) to INFER$"):
                link.infer([0] * 16)


def test_wrong_reply_command_and_version_are_refused():
    with ScriptedServer(answer_info_then(lambda frame: protocol.info_reply(INFO))) as server:
        with EngineLink(server.url, timeout=1.0) as link:
            with pytest.raises(NmflowError, match=r"^reply command must be 0x82 \(INFER\), "
                                                  r"not 0x81$"):
                link.infer([0] * 16)
    v2 = Info(2, 16, 5, 4, 3)
    with ScriptedServer(lambda frame: protocol.info_reply(v2)) as server:
        with EngineLink(server.url, timeout=1.0) as link:
            with pytest.raises(NmflowError, match=r"^board protocol version must be 1, not 2 "):
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
    with pytest.raises(NmflowError, match=r"^timeout must be a positive number of seconds, not 0$"):
        EngineLink("socket://127.0.0.1:9", timeout=0)
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()                                       # nobody listens there now
    with pytest.raises(NmflowError, match=f"^cannot open port 'socket://127.0.0.1:{port}': "):
        EngineLink(f"socket://127.0.0.1:{port}")


# -- the driver against the simulated gateware --------------------------------------------------

@pytest.fixture(scope="module")
def board():
    with SimulatedBoard(MODEL, lanes=16, divisor=4) as simulated:
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
            assert link.info() == Info(1, 4, 3, 2, protocol.score_bytes(small.score_bits))
            cls, scores = link.infer([3, 0, 1, 2])
    trace = reference(small, np.array([3, 0, 1, 2]))
    assert (cls, scores.tolist()) == (trace.classes[0], trace.scores[0].tolist())
    assert time.monotonic() - start < 30
    port = url.rsplit(":", 1)[1]
    assert [t.name for t in threading.enumerate() if t.name.endswith(f"-{port}")] == []
