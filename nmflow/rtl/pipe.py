"""A register stage for a stream: cuts the combinational path of ``valid`` and ``payload``."""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamRegister"]


class StreamRegister(wiring.Component):
    """One register between two streams.

    ``o.valid`` and ``o.payload`` come from registers; ``i.ready`` is ``~o.valid | o.ready``, so a
    consumer that is always ready sees one beat per cycle. Use it where the producer's ``valid``
    comes out of deep logic (a state machine) and the consumer acts on it with deep logic too.

    Parameters
    ----------
    shape : shape-like
        Payload shape.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))

    Latency: :attr:`latency` = 1 cycle. Throughput: one beat per cycle.
    """

    latency = 1

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
