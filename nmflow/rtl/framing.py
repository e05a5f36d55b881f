"""The framing every host link shares, in gateware: a frame receiver and a frame sender.

The protocol's framing (docs/contracts.md, sections 5.2, 5.3, 5.5 and 5.6;
:mod:`nmflow.protocol.framing`) is written here once. A unit's link
(:class:`~nmflow.rtl.hostlink.HostLink`, :class:`~nmflow.rtl.eqprop_link.EqPropLinkCore`) is
only its command handler between the two: it says which commands, lengths and values it accepts,
keeps the payload, executes a checked request and hands the sender its reply.

:class:`FrameReceiver` takes bytes from the UART (one every other cycle at most: each byte is
taken, then acted on a cycle later), hunts for SYNC, follows the fields (CMD, LEN, the payload,
CRC), keeps the CRC, times a stalled frame out, and after an error discards bytes until the line
has been quiet for ``timeout`` cycles before the ERROR reply goes out. It tells the handler where
the frame stands through one-cycle field strobes and asks for the handler's verdicts in the same
cycle; a handler that registers its checks when the byte is taken (``take``, ``incoming``) keeps
them off the paths through the state machines. Bytes that arrive while a request is executed or
answered are discarded, and so is what follows them until the line is quiet (the reply drain).

:class:`FrameSender` sends a reply: SYNC, CMD, LEN, the body bytes the handler offers and the CRC
of CMD, LEN and the body, or an ERROR reply carrying the receiver's code.

A link connects them so::

    receiver.done   <- sender.done              (the reply, good or error, is out)
    sender.error    <- receiver.error           (with sender.code <- receiver.code)
    sender.start    <- receiver.error_start | the handler's start
"""

from amaranth.hdl import Array, Const, Module, ResetInserter, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import check_int
from ..protocol.framing import CRC, ERROR_REPLY, SYNC, ErrorCode
from .onehot import OneHotFSM

__all__ = ["FrameReceiver", "FrameSender", "BODY_LAYOUT", "check_timeout", "add_framing"]

#: A reply body byte, with ``last`` on the body's last byte.
BODY_LAYOUT = data.StructLayout({"data": 8, "last": 1})


def check_timeout(timeout):
    """``timeout`` if it is a whole number of cycles >= 1; :class:`~nmflow.errors.NmflowError`
    otherwise."""
    return check_int("timeout", timeout, 1, rule="a positive integer number of cycles")


def add_framing(m, link, timeout):
    """A :class:`FrameReceiver` and a :class:`FrameSender` in ``m``, between ``link``'s byte
    streams (``rx``, ``tx``) and status outputs (``idle``, ``receiving``), joined to each other
    as the module docstring says. Returns ``(receiver, sender, start)``: the handler drives
    ``start`` (a one-cycle strobe) to send its reply."""
    m.submodules.receiver = receiver = FrameReceiver(timeout)
    m.submodules.sender = sender = FrameSender()
    wiring.connect(m, wiring.flipped(link.rx), receiver.rx)
    wiring.connect(m, sender.tx, wiring.flipped(link.tx))
    start = Signal()
    m.d.comb += [link.idle.eq(receiver.idle), link.receiving.eq(receiver.receiving),
                 receiver.done.eq(sender.done), sender.error.eq(receiver.error),
                 sender.code.eq(receiver.code), sender.start.eq(receiver.error_start | start)]
    return receiver, sender, start


class FrameReceiver(wiring.Component):
    """Receives frames and keeps the receiver's rules; the handler gives the verdicts.

    Parameters
    ----------
    timeout : int
        Inter-byte timeout inside a frame, and the quiet time that ends a discarded burst, in
        clock cycles (at least 1).

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the UART receiver; ready except in the cycle after a byte is taken.
    take : Out(1)
        A byte is taken this cycle: it is ``incoming``. A handler registers its checks of that
        byte now and reads them in the cycle of the byte's strobe.
    incoming : Out(8)
        ``rx.payload``.
    byte : Out(8)
        The byte taken last cycle (held until the next one).
    len_lo : Out(8)
        The frame's LEN_LO byte (for a length check registered when LEN_HI is taken).
    at_cmd, at_len_hi, at_payload, at_crc : Out(1)
        One-cycle strobes, in the cycle after the frame's CMD, LEN_HI, a payload byte or the CRC
        byte was taken (the byte is then in ``byte``).
    start : Out(1)
        One-cycle strobe: a frame begins (its SYNC was taken while hunting).
    cmd_ok : In(1)
        With ``at_cmd``: the command is a request of the link (else ``BAD_COMMAND``).
    len_ok, has_payload : In(1)
        With ``at_len_hi``: LEN is the command's length (else ``BAD_LENGTH``), and a payload
        follows (else the next byte is the CRC).
    value_ok, last : In(1)
        With ``at_payload``: the byte is in range (else ``BAD_VALUE``); it is the payload's last.
    args_ok : In(1)
        With ``at_crc``: the values checked as a whole are in range (else ``BAD_VALUE``, once
        the CRC has checked).
    accepted : Out(1)
        One-cycle strobe: the frame checked; the handler executes it and replies. The receiver
        discards what arrives meanwhile until ``done``.
    done : In(1)
        The reply (the handler's or the error reply) is out: the sender's ``done``.
    error, code : Out(1), Out(ErrorCode)
        An error reply is due (high from the first failed check until it is out), and its code.
    error_start : Out(1)
        One-cycle strobe: the line is quiet after an error: start the error reply.
    idle : Out(1)
        Hunting for a frame with nothing pending.
    receiving : Out(1)
        A frame is being received (after its SYNC, before its CRC).
    """

    def __init__(self, timeout):
        self._timeout = check_timeout(timeout)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "take": Out(1), "incoming": Out(8), "byte": Out(8), "len_lo": Out(8),
            "at_cmd": Out(1), "at_len_hi": Out(1), "at_payload": Out(1), "at_crc": Out(1),
            "start": Out(1),
            "cmd_ok": In(1), "len_ok": In(1), "has_payload": In(1), "value_ok": In(1),
            "last": In(1), "args_ok": In(1),
            "accepted": Out(1), "done": In(1),
            "error": Out(1), "code": Out(ErrorCode, init=ErrorCode.TIMEOUT), "error_start": Out(1),
            "idle": Out(1), "receiving": Out(1),
        })

    timeout = property(lambda self: self._timeout)

    def elaborate(self, platform):
        m = Module()
        rx = self.rx
        got = Signal()                      # a byte was taken last cycle
        m.d.comb += [rx.ready.eq(~got), self.take.eq(rx.valid & rx.ready),
                     self.incoming.eq(rx.payload)]
        m.d.sync += got.eq(self.take)
        is_sync, crc_ok = Signal(), Signal()
        quiet = self._quiet_timer(m)
        crc_clear, crc_unit = Signal(), CRC.create()
        m.submodules.crc = ResetInserter(crc_clear)(crc_unit)
        m.d.comb += crc_unit.data.eq(self.byte)
        with m.If(self.take):
            m.d.sync += [self.byte.eq(rx.payload), is_sync.eq(rx.payload == SYNC),
                         crc_ok.eq(rx.payload == crc_unit.crc)]
        dirty = Signal()                    # a byte arrived while busy: drain before hunting

        def fail(code):
            m.d.sync += [self.code.eq(code), self.error.eq(1)]
            fsm.next("DRAIN")

        def receive(strobe, then):
            """A frame state: the byte taken last cycle goes into the CRC and ``then()`` acts on
            it; a frame with no byte for ``timeout`` cycles times out."""
            m.d.comb += self.receiving.eq(1)
            with m.If(got):
                m.d.comb += crc_unit.valid.eq(1)
                if strobe is not None:
                    m.d.comb += strobe.eq(1)
                then()
            with m.Elif(quiet):
                fail(ErrorCode.TIMEOUT)

        fsm = OneHotFSM(m, ["HUNT", "CMD", "LEN_LO", "LEN_HI", "PAYLOAD", "CHECK", "BUSY",
                            "DRAIN"], init="HUNT", name="receiver")
        with fsm.State("HUNT"):
            m.d.comb += self.idle.eq(1)
            with m.If(got & is_sync):
                m.d.comb += [crc_clear.eq(1), self.start.eq(1)]
                fsm.next("CMD")

        with fsm.State("CMD"):
            def on_cmd():
                with m.If(self.cmd_ok):
                    fsm.next("LEN_LO")
                with m.Else():
                    fail(ErrorCode.BAD_COMMAND)
            receive(self.at_cmd, on_cmd)

        with fsm.State("LEN_LO"):
            def on_len_lo():
                m.d.sync += self.len_lo.eq(self.byte)
                fsm.next("LEN_HI")
            receive(None, on_len_lo)

        with fsm.State("LEN_HI"):
            def on_len_hi():
                with m.If(~self.len_ok):
                    fail(ErrorCode.BAD_LENGTH)
                with m.Elif(self.has_payload):
                    fsm.next("PAYLOAD")
                with m.Else():
                    fsm.next("CHECK")
            receive(self.at_len_hi, on_len_hi)

        with fsm.State("PAYLOAD"):
            def on_payload():
                with m.If(~self.value_ok):
                    fail(ErrorCode.BAD_VALUE)
                with m.Elif(self.last):
                    fsm.next("CHECK")
            receive(self.at_payload, on_payload)

        with fsm.State("CHECK"):
            def on_check():
                with m.If(~crc_ok):
                    fail(ErrorCode.BAD_CHECKSUM)
                with m.Elif(~self.args_ok):
                    fail(ErrorCode.BAD_VALUE)
                with m.Else():
                    m.d.comb += self.accepted.eq(1)
                    fsm.next("BUSY")
            receive(self.at_crc, on_check)

        with fsm.State("BUSY"):
            # A request is executed or answered, or an error reply goes out.
            with m.If(got):
                m.d.sync += dirty.eq(1)
            with m.If(self.done):
                m.d.sync += [self.error.eq(0), dirty.eq(0)]
                with m.If(dirty | got | self.take):
                    fsm.next("DRAIN")
                with m.Else():
                    fsm.next("HUNT")

        with fsm.State("DRAIN"):
            with m.If(quiet):
                m.d.sync += dirty.eq(0)
                with m.If(self.error):
                    m.d.comb += self.error_start.eq(1)
                    fsm.next("BUSY")
                with m.Else():
                    fsm.next("HUNT")
        return m

    def _quiet_timer(self, m):
        """``quiet``: the line has been quiet for ``timeout`` cycles since the last byte taken,
        kept in a register (set a cycle ahead) so the wide comparison is off the paths that
        decide what the link does next."""
        idle_time = Signal(range(self._timeout + 1))
        quiet = Signal()
        with m.If(self.take):
            m.d.sync += [idle_time.eq(0), quiet.eq(0)]
        with m.Elif(~quiet):
            m.d.sync += [idle_time.eq(idle_time + 1), quiet.eq(idle_time == self._timeout - 1)]
        return quiet


class FrameSender(wiring.Component):
    """Sends one reply frame at a time: header, body, CRC.

    Members
    -------
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter.
    start : In(1)
        Strobe: send a reply now. ``cmd``, ``length`` and ``empty`` (or ``error`` and ``code``)
        are held until the header is out.
    cmd, length : In(8), In(16)
        The reply's command and payload length.
    empty : In(1)
        The reply has no body (LEN 0): the CRC follows the header.
    error, code : In(1), In(8)
        Send an ERROR reply carrying ``code`` instead (the receiver's).
    body : In(stream.Signature(BODY_LAYOUT))
        The reply's payload bytes, ``last`` on the last; a byte is taken as it is sent.
    done : Out(1)
        Strobe: the reply's CRC byte is taken.
    busy : Out(1)
        A reply is going out.
    """

    def __init__(self):
        super().__init__({
            "tx": Out(stream.Signature(8)),
            "start": In(1), "cmd": In(8), "length": In(16), "empty": In(1),
            "error": In(1), "code": In(8),
            "body": In(stream.Signature(BODY_LAYOUT)),
            "done": Out(1), "busy": Out(1),
        })

    def offer(self, m, data, last, then):
        """In the handler's module ``m``: offer ``data`` as a body byte (``last`` ends the body)
        and call ``then()`` in the cycle it is taken."""
        body = self.body
        m.d.comb += [body.valid.eq(1), body.payload.data.eq(data), body.payload.last.eq(last)]
        with m.If(body.ready):
            then()

    def elaborate(self, platform):
        m = Module()
        tx = self.tx
        crc_clear, crc_unit = Signal(), CRC.create()
        m.submodules.crc = ResetInserter(crc_clear)(crc_unit)
        m.d.comb += crc_unit.data.eq(tx.payload)
        idx = Signal(2)
        cmd = Signal(8)
        length = Signal(16)
        with m.If(self.error):
            m.d.comb += [cmd.eq(ERROR_REPLY), length.eq(1)]
        with m.Else():
            m.d.comb += [cmd.eq(self.cmd), length.eq(self.length)]
        header = Array([Const(SYNC, 8), cmd, length[:8], length[8:]])
        sent = Signal()
        m.d.comb += sent.eq(tx.valid & tx.ready)

        def emit(data, valid=1):
            m.d.comb += [self.busy.eq(1), tx.payload.eq(data), tx.valid.eq(valid)]

        with m.FSM(name="sender"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += idx.eq(0)
                    m.next = "HEAD"
            with m.State("HEAD"):
                emit(header[idx])
                with m.If(sent):
                    m.d.sync += idx.eq(idx + 1)
                    m.d.comb += crc_clear.eq(idx == 0)      # SYNC is not covered
                    m.d.comb += crc_unit.valid.eq(idx != 0)
                    with m.If(idx == 3):
                        with m.If(self.error):
                            m.next = "CODE"
                        with m.Elif(self.empty):
                            m.next = "CRC"
                        with m.Else():
                            m.next = "BODY"
            with m.State("CODE"):
                emit(self.code)
                m.d.comb += crc_unit.valid.eq(sent)
                with m.If(sent):
                    m.next = "CRC"
            with m.State("BODY"):
                emit(self.body.payload.data, self.body.valid)
                m.d.comb += [self.body.ready.eq(tx.ready), crc_unit.valid.eq(sent)]
                with m.If(sent & self.body.payload.last):
                    m.next = "CRC"
            with m.State("CRC"):
                emit(crc_unit.crc)
                with m.If(sent):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m
