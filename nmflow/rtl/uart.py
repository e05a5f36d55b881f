"""A small 8N1 UART: a receiver and a transmitter with byte streams.

Both sides run in the ``sync`` domain with ``divisor`` clock cycles per bit (``divisor =
round(clk_freq / baud)``): 8 data bits, least significant first, no parity, one stop bit.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ..errors import check_int

__all__ = ["UARTRx", "UARTTx", "check_divisor"]


def check_divisor(divisor):
    """Return ``divisor`` if it is an integer >= 4, else raise
    :class:`~nmflow.errors.NmflowError`."""
    return check_int("divisor", divisor, 4)


class UARTRx(wiring.Component):
    """8N1 UART receiver.

    The ``rx`` pin goes through a 2-FF synchroniser. A falling edge starts a character; the start
    bit is sampled again half a bit later and a low pulse that is gone by then is a glitch, ignored
    (a low pulse of at most ``divisor // 2`` cycles never starts a character). Each data bit and
    the stop bit are then sampled once, in the middle of the bit, which tolerates a baud error of
    about +-4 % for ``divisor >= 16`` (tested at +-2 %; less for small divisors, whose half bit is
    coarse).

    A character with a high stop bit is offered on ``o``; one with a low stop bit is dropped and
    ``frame_error`` pulses for one cycle, after which the receiver waits for the line to return
    high (so a held-low line, a *break*, gives one frame error, not a stream of them).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    rx : In(1, init=1)
        The serial input pin, idle high. Asynchronous to the clock.
    o : Out(stream.Signature(8))
        Received bytes. There is no buffering beyond the one byte: a byte not accepted before the
        next character's stop bit has been sampled is replaced by it.
    frame_error : Out(1)
        One-cycle pulse for a character whose stop bit was low.

    Latency: :attr:`latency` cycles from the falling edge of the start bit on ``rx`` to ``o.valid``
    (2 synchroniser cycles, half a bit, 9 bits, 1 output register). Throughput: one byte per
    character time (``10 * divisor`` cycles).
    """

    def __init__(self, divisor):
        self._divisor = check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "frame_error": Out(1),
        })

    @property
    def divisor(self):
        return self._divisor

    @property
    def latency(self):
        """Cycles from the start bit's falling edge on the pin to ``o.valid``."""
        return 2 + self._divisor // 2 + 9 * self._divisor + 1

    def elaborate(self, platform):
        m = Module()
        divisor, half = self._divisor, self._divisor // 2

        rx = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.rx, rx, init=1)

        # The timer counts down to -1: its sign bit marks the cycle to sample, so no comparator
        # sits on the count (a compare on a decrementing counter was the board's slowest path).
        timer = Signal(range(-1, divisor - 1), init=-1)
        bit = Signal(range(8))
        shreg = Signal(8)
        sample = timer[-1]

        m.d.sync += self.frame_error.eq(0)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(half - 2)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(sample):
                    m.d.sync += [timer.eq(divisor - 2), bit.eq(0)]
                    m.next = "DATA"
                    with m.If(rx):                      # gone by mid-bit: a glitch
                        m.next = "IDLE"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(sample):
                    m.d.sync += [timer.eq(divisor - 2), shreg.eq(Cat(shreg[1:], rx)),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(sample):
                    with m.If(rx):
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 UART transmitter, ``divisor`` clock cycles per bit (at least 4).

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send. ``i.ready`` is high while the transmitter is idle, including the last cycle
        of a stop bit, so back-to-back bytes leave no gap on the line.
    tx : Out(1, init=1)
        The serial output pin, a register, idle high.

    Latency: :attr:`latency` = 1 cycle from the handshake on ``i`` to the start bit on ``tx``.
    Throughput: one byte per ``10 * divisor`` cycles.
    """

    latency = 1

    def __init__(self, divisor):
        self._divisor = check_divisor(divisor)
        super().__init__({
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor

        # Counts down to -1, the last cycle of a bit: its sign bit is ``bit_done`` (no comparator
        # on the count, as in the receiver).
        timer = Signal(range(-1, divisor - 1), init=-1)
        left = Signal(range(10))            # bits still to put on the line after the current one
        shreg = Signal(9)                   # data bits then the stop bit, shifted out LSB first
        bit_done = timer[-1]
        # ``ready`` is ``bit_done & (left == 0)`` computed a cycle ahead into a register, so that
        # no combinational path runs from the transmitter's counters into the producer.
        ready = Signal(init=1)

        m.d.comb += self.i.ready.eq(ready)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.tx.eq(0), shreg.eq(Cat(self.i.payload, Const(1, 1))),
                         left.eq(9), timer.eq(divisor - 2), ready.eq(0)]
        with m.Elif(~bit_done):
            m.d.sync += [timer.eq(timer - 1), ready.eq((timer == 0) & (left == 0))]
        with m.Elif(left != 0):
            m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(shreg >> 1), left.eq(left - 1),
                         timer.eq(divisor - 2), ready.eq(0)]
        return m
