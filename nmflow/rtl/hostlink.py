"""The host link: a framed request/reply protocol between UART byte streams and the engine.

Protocol, version 1
===================

Every frame, in both directions, is::

    offset   size   field
    0        1      SYNC    0xA5
    1        1      CMD     command (requests) or reply command (replies)
    2        2      LEN     payload length in bytes, little-endian (0 to 65535)
    4        LEN    PAYLOAD
    4+LEN    1      CRC     CRC-8/SMBUS of CMD, LEN and PAYLOAD (every byte but SYNC and CRC):
                            polynomial 0x07, initial value 0x00, not reflected, no final XOR
                            (the CRC of the ASCII bytes "123456789" is 0xF4)

Requests (host to board)::

    CMD   name    LEN        PAYLOAD
    0x01  INFO    0          -
    0x02  INFER   n_inputs   one byte per input value, in input order, each < 2**input_bits

Replies (board to host)::

    CMD   name    LEN                          PAYLOAD
    0x81  INFO    7                            version (1), n_inputs (u16 LE), n_classes (u16 LE),
                                               input_bits (u8), score_bytes (u8)
    0x82  INFER   1 + n_classes * score_bytes  class (u8, the argmax, lowest index on ties), then
                                               score 0 .. score n_classes-1, each score_bytes
                                               bytes, little-endian two's complement
    0xFF  ERROR   1                            error code

``score_bytes = ceil(score_bits / 8)``. Error codes::

    0x01  BAD_COMMAND    CMD is not a request command
    0x02  BAD_LENGTH     LEN is not the command's length (INFO 0, INFER n_inputs)
    0x03  BAD_VALUE      an INFER payload byte is >= 2**input_bits
    0x04  BAD_CHECKSUM   CRC does not match
    0x05  TIMEOUT        a frame stopped mid-way: no byte for ``timeout`` cycles after its SYNC

Rules of the receiver:

1. While waiting for a frame, bytes other than SYNC are skipped silently (resynchronisation).
2. A frame is checked field by field as it arrives, in the order CMD, LEN, each payload byte, CRC;
   the first check that fails ends the frame with that error. A frame in progress with no new byte
   for ``timeout`` cycles ends with ``TIMEOUT``.
3. After an error the link discards every byte until the line has been quiet for ``timeout``
   cycles, then sends the ERROR reply. A burst of garbage therefore gets at most one reply (none if
   it holds no SYNC byte), and when any reply arrives the link is already waiting for the next
   frame. The line never stays blocked: at most ``timeout`` cycles after the last byte of any
   burst the link is hunting again (once its reply, if any, is out).
4. One request at a time: the host sends a frame and waits for its reply. Bytes that arrive while
   a good request is executed or answered are discarded, and so is everything after them until the
   line has been quiet for ``timeout`` cycles; they get no reply.
5. The engine only ever sees complete, valid input vectors: an INFER payload is buffered and fed to
   the engine only once its CRC has checked.
6. A character with a bad stop bit is dropped by the UART receiver; the frame it belonged to then
   fails its length, CRC or timeout check.

The timeout counts clock cycles since the last received byte (:class:`~nmflow.rtl.top.HostTop`
sets it from seconds, 20 ms by default). Hosts send each request as one burst and read its reply
before sending the next; they may resend after an ERROR reply at once.

:class:`nmflow.boards.protocol.LinkModel` is the plain-Python twin of these rules.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..boards import protocol
from ..boards.protocol import Command, ErrorCode, Reply
from .engine import result_layout

__all__ = ["HostLink", "check_parameters", "crc8_update"]


def crc8_update(crc, byte):
    """The CRC-8/SMBUS of ``crc`` after one more ``byte`` (both 8-bit values): an XOR network."""
    v = crc ^ byte
    return Cat(*[_xor(v[i] for i in taps) for taps in protocol.crc8_matrix()])


def _xor(bits):
    bits = list(bits)
    out = bits[0]
    for b in bits[1:]:
        out = out ^ b
    return out


def _check_int(name, value, low, high, rule=None):
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        rule = rule or f"an integer between {low} and {high}"
        raise ValueError(f"{name} must be {rule}, not {value!r}")


def check_parameters(n_inputs, input_bits, n_classes, score_bits, *, timeout):
    """Raise :class:`ValueError` naming the first parameter :class:`HostLink` cannot take."""
    _check_int("n_inputs", n_inputs, 1, protocol.MAX_INPUTS)
    _check_int("input_bits", input_bits, 1, 8)
    _check_int("n_classes", n_classes, 1, protocol.MAX_CLASSES)
    _check_int("score_bits", score_bits, 1, protocol.MAX_SCORE_BITS)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
        raise ValueError(f"timeout must be an integer number of cycles >= 1, not {timeout!r}")


class HostLink(wiring.Component):
    """Frame parser, input buffer and reply serializer between a UART and the engine.

    Implements the protocol of this module's docstring exactly (see :mod:`nmflow.rtl.hostlink`).

    Parameters
    ----------
    n_inputs : int
        Input values per inference, 1 to 65535.
    input_bits : int
        Width of an input value, 1 to 8.
    n_classes : int
        Classes (scores per inference), 1 to 256.
    score_bits : int
        Width of a signed score, 1 to 64.
    timeout : int
        Inter-byte timeout inside a frame, and the quiet time that ends a discarded burst, in clock
        cycles (at least 1; use a few character times, ``>= 20 * divisor``).

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the UART receiver. Ready except in the cycle after a byte is taken (each byte
        is checked on arrival and acted on a cycle later): one byte per two cycles at most,
        far above a UART's rate.
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter.
    engine_i : Out(stream.Signature(unsigned(input_bits)))
        Input values to the engine, ``n_inputs`` beats per valid INFER request.
    engine_o : In(stream.Signature(result_layout(n_classes, score_bits)))
        The engine's results, consumed as they are serialized.

    Attributes
    ----------
    idle : Signal
        High while the link waits for a frame and has nothing pending (for simulation bridges and
        status LEDs; not a port).
    receiving : Signal
        High while a frame is being received (after its SYNC, before its CRC).

    Timing: an INFER payload is fed to the engine at one value per cycle (when the engine is
    ready) right after its CRC byte; the reply header is then handed to the transmitter while the
    engine computes, and each result beat is released as soon as its last score byte is taken.
    An error reply starts once the line has been quiet for ``timeout`` cycles. A round trip on the
    line takes :attr:`request_bytes` + :attr:`reply_bytes` characters plus the engine's latency.
    """

    def __init__(self, n_inputs, input_bits, n_classes, score_bits, *, timeout):
        check_parameters(n_inputs, input_bits, n_classes, score_bits, timeout=timeout)
        self._n_inputs = n_inputs
        self._input_bits = input_bits
        self._n_classes = n_classes
        self._score_bits = score_bits
        self._timeout = timeout
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "engine_i": Out(stream.Signature(unsigned(input_bits))),
            "engine_o": In(stream.Signature(result_layout(n_classes, score_bits))),
        })
        self.idle = Signal()
        self.receiving = Signal()

    n_inputs = property(lambda self: self._n_inputs)
    input_bits = property(lambda self: self._input_bits)
    n_classes = property(lambda self: self._n_classes)
    score_bits = property(lambda self: self._score_bits)
    timeout = property(lambda self: self._timeout)

    @property
    def info(self):
        """The :class:`~nmflow.boards.protocol.Info` this link reports."""
        return protocol.Info(protocol.VERSION, self._n_inputs, self._n_classes, self._input_bits,
                             protocol.score_bytes(self._score_bits))

    @property
    def request_bytes(self):
        """Bytes of an INFER request frame on the line."""
        return protocol.HEADER_BYTES + self._n_inputs

    @property
    def reply_bytes(self):
        """Bytes of an INFER reply frame on the line."""
        return protocol.HEADER_BYTES + self.info.infer_reply_length

    def elaborate(self, platform):
        m = Module()
        info = self.info
        n_inputs, sb = self._n_inputs, info.score_bytes
        rx, tx, ei, eo = self.rx, self.tx, self.engine_i, self.engine_o

        # -- state shared by the receiver and the transmitter ------------------------------------
        crc = Signal(8)
        crc_in = Signal(8)                  # the byte being received or sent, in CMD..PAYLOAD
        crc_next = crc8_update(crc, crc_in)
        count = Signal(range(max(n_inputs, 2)))     # payload byte being received / fed
        idx = Signal(range(8))                      # header, INFO or score byte being sent
        is_infer = Signal()
        len_lo = Signal(8)
        error = Signal()
        code = Signal(3)
        dirty = Signal()                    # a byte arrived while busy: drain before hunting

        # -- inter-byte timer: cycles since the last received byte, saturating ------------------
        # ``quiet`` is ``idle_time == timeout`` kept in a register (set a cycle ahead), so the
        # wide comparison is off the paths that decide what the link does next.
        idle_time = Signal(range(self._timeout + 1))
        quiet = Signal()
        got = Signal()                      # a byte was taken last cycle; its flags are ready
        take = Signal()
        m.d.comb += [rx.ready.eq(~got), take.eq(rx.valid & rx.ready)]
        with m.If(take):
            m.d.sync += [idle_time.eq(0), quiet.eq(0)]
        with m.Elif(~quiet):
            m.d.sync += [idle_time.eq(idle_time + 1), quiet.eq(idle_time == self._timeout - 1)]

        # -- received bytes: checked as they arrive, into flags the frame states act on one
        # cycle later (bytes are at least 10 bit times apart), keeping those checks off the
        # paths through the state machine. A byte is taken at most every other cycle ----------
        byte = Signal(8)
        is_sync, is_info_cmd, is_infer_cmd = Signal(), Signal(), Signal()
        len_ok, value_ok, crc_ok = Signal(), Signal(), Signal()
        m.d.sync += got.eq(take)
        with m.If(take):
            m.d.sync += [
                byte.eq(rx.payload),
                is_sync.eq(rx.payload == protocol.SYNC),
                is_info_cmd.eq(rx.payload == Command.INFO),
                is_infer_cmd.eq(rx.payload == Command.INFER),
                len_ok.eq(Cat(len_lo, rx.payload) == Mux(is_infer, n_inputs, 0)),
                value_ok.eq(rx.payload[self._input_bits:] == 0),
                crc_ok.eq(rx.payload == crc),
            ]

        # -- input buffer: the engine sees a payload only after its CRC checked ------------------
        m.submodules.buffer = buffer = Memory(shape=unsigned(self._input_bits), depth=n_inputs,
                                              init=[], attrs={"ram_style": "block"})
        wr = buffer.write_port()
        rd = buffer.read_port()
        feed = ei.valid & ei.ready
        m.d.comb += [
            wr.addr.eq(count), wr.data.eq(byte),
            rd.addr.eq(count + feed),       # rd.data is buffer[count] in FEED (addr 0 in CHECK)
            ei.payload.eq(rd.data),
        ]

        # -- reply header bytes -----------------------------------------------------------------
        reply_cmd = Signal(8)
        reply_len = Signal(16)
        with m.If(error):
            m.d.comb += [reply_cmd.eq(Reply.ERROR), reply_len.eq(1)]
        with m.Elif(is_infer):
            m.d.comb += [reply_cmd.eq(Reply.INFER), reply_len.eq(info.infer_reply_length)]
        with m.Else():
            m.d.comb += [reply_cmd.eq(Reply.INFO), reply_len.eq(protocol.INFO_BYTES)]
        header = Array([Const(protocol.SYNC, 8), reply_cmd, reply_len[:8], reply_len[8:]])
        info_bytes = Array(Const(b, 8) for b in protocol.encode_info(info))
        # The engine's result beat being sent, held in registers: the engine's handshake never
        # waits on the byte-level logic of the transmitter.
        beat = Signal()                     # a result beat is held
        beat_score = Signal(signed(8 * sb))
        beat_cls = Signal(8)
        beat_last = Signal()

        def take_beat():
            m.d.comb += eo.ready.eq(1)
            with m.If(eo.valid):
                m.d.sync += [beat.eq(1), beat_score.eq(eo.payload.score),
                             beat_cls.eq(eo.payload.cls), beat_last.eq(eo.payload.last)]

        def fail(error_code):
            m.d.sync += [code.eq(error_code), error.eq(1)]
            m.next = "DRAIN"

        def receive(then):
            """Common to the frame states: take a byte into the CRC, or time out."""
            m.d.comb += [self.receiving.eq(1), crc_in.eq(byte)]
            with m.If(got):
                m.d.sync += crc.eq(crc_next)
                then()
            with m.Elif(quiet):
                fail(ErrorCode.TIMEOUT)

        def busy():
            with m.If(got):
                m.d.sync += dirty.eq(1)

        def send(byte):
            m.d.comb += [tx.payload.eq(byte), crc_in.eq(byte)]
            busy()

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += self.idle.eq(1)
                with m.If(got & is_sync):
                    m.d.sync += [crc.eq(0), count.eq(0)]
                    m.next = "CMD"

            with m.State("CMD"):
                def on_cmd():
                    m.d.sync += is_infer.eq(is_infer_cmd)
                    with m.If(is_info_cmd | is_infer_cmd):
                        m.next = "LEN_LO"
                    with m.Else():
                        fail(ErrorCode.BAD_COMMAND)
                receive(on_cmd)

            with m.State("LEN_LO"):
                def on_len_lo():
                    m.d.sync += len_lo.eq(byte)
                    m.next = "LEN_HI"
                receive(on_len_lo)

            with m.State("LEN_HI"):
                def on_len_hi():
                    with m.If(~len_ok):
                        fail(ErrorCode.BAD_LENGTH)
                    with m.Elif(is_infer):
                        m.next = "PAYLOAD"
                    with m.Else():
                        m.next = "CHECK"
                receive(on_len_hi)

            with m.State("PAYLOAD"):
                def on_payload():
                    with m.If(~value_ok):
                        fail(ErrorCode.BAD_VALUE)
                    with m.Else():
                        m.d.comb += wr.en.eq(1)
                        m.d.sync += count.eq(count + 1)
                        with m.If(count == n_inputs - 1):
                            m.d.sync += count.eq(0)
                            m.next = "CHECK"
                receive(on_payload)

            with m.State("CHECK"):
                def on_check():
                    with m.If(~crc_ok):
                        fail(ErrorCode.BAD_CHECKSUM)
                    with m.Elif(is_infer):
                        m.next = "FEED"
                    with m.Else():
                        m.d.sync += idx.eq(0)
                        m.next = "HEAD"
                receive(on_check)

            with m.State("FEED"):
                busy()
                m.d.comb += ei.valid.eq(1)
                with m.If(feed):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == n_inputs - 1):
                        m.d.sync += [count.eq(0), idx.eq(0)]
                        m.next = "HEAD"

            with m.State("DRAIN"):
                with m.If(quiet):
                    m.d.sync += [dirty.eq(0), idx.eq(0)]
                    with m.If(error):
                        m.next = "HEAD"
                    with m.Else():
                        m.next = "HUNT"

            with m.State("HEAD"):
                send(header[idx])
                m.d.comb += tx.valid.eq(1)
                with m.If(tx.ready):
                    m.d.sync += [crc.eq(crc_next), idx.eq(idx + 1)]
                    with m.If(idx == 0):
                        m.d.sync += crc.eq(0)
                    with m.If(idx == 3):
                        m.d.sync += idx.eq(0)
                        with m.If(error):
                            m.next = "ERROR_BODY"
                        with m.Elif(is_infer):
                            m.next = "CLASS"
                        with m.Else():
                            m.next = "INFO_BODY"

            with m.State("ERROR_BODY"):
                send(code)
                m.d.comb += tx.valid.eq(1)
                with m.If(tx.ready):
                    m.d.sync += crc.eq(crc_next)
                    m.next = "CRC"

            with m.State("INFO_BODY"):
                send(info_bytes[idx])
                m.d.comb += tx.valid.eq(1)
                with m.If(tx.ready):
                    m.d.sync += [crc.eq(crc_next), idx.eq(idx + 1)]
                    with m.If(idx == protocol.INFO_BYTES - 1):
                        m.next = "CRC"

            with m.State("CLASS"):
                # The class comes with the first result beat, which stays held for SCORE.
                with m.If(~beat):
                    busy()
                    take_beat()
                with m.Else():
                    send(beat_cls)
                    m.d.comb += tx.valid.eq(1)
                    with m.If(tx.ready):
                        m.d.sync += [crc.eq(crc_next), idx.eq(0)]
                        m.next = "SCORE"

            with m.State("SCORE"):
                with m.If(~beat):
                    busy()
                    take_beat()
                with m.Else():
                    send(beat_score.word_select(idx, 8))
                    m.d.comb += tx.valid.eq(1)
                    with m.If(tx.ready):
                        m.d.sync += [crc.eq(crc_next), idx.eq(idx + 1)]
                        with m.If(idx == sb - 1):
                            m.d.sync += [idx.eq(0), beat.eq(0)]
                            with m.If(beat_last):
                                m.next = "CRC"

            with m.State("CRC"):
                send(crc)
                m.d.comb += tx.valid.eq(1)
                with m.If(tx.ready):
                    m.d.sync += [error.eq(0), dirty.eq(0)]
                    with m.If(dirty | got | take):
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "HUNT"
        return m
