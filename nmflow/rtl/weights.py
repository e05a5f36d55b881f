"""Weight memory holding 2T2R pair codes, one row of ``lanes`` codes per read, optionally writable."""

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from ..errors import NmflowError
from ..golden.pairs import pack_rows
from ..golden.plan import MEMORY_KINDS, index_bits

__all__ = ["PairCode", "pair_row", "PairReadSignature", "WeightMemory", "MEMORY_KINDS"]


class PairCode(data.Struct):
    """A 2T2R pair: ``blb`` in bit 0, ``bl`` in bit 1, 1 meaning LRS (docs/contracts.md,
    contract 2)."""
    blb: 1
    bl: 1


def pair_row(lanes):
    """Layout of one memory row: ``lanes`` pair codes, lane ``p`` at bits ``[2p + 1 : 2p]``."""
    return data.ArrayLayout(PairCode, lanes)


class PairReadSignature(wiring.Signature):
    """Reading rows of the weight memory from outside the engine, as its requester sees it.

    ``addr`` and ``en`` out: raise ``en`` for one cycle with a row's address; ``valid`` comes back
    high for one cycle, a fixed number of cycles later, with the row's pair codes on ``data``
    (``data`` keeps them until the next read). Only while the engine is idle: its own reads of
    the memory take the port first.
    """

    def __init__(self, addr_bits, lanes):
        super().__init__({"addr": Out(addr_bits), "en": Out(1),
                          "data": In(pair_row(lanes)), "valid": In(1)})


class WeightMemory(wiring.Component):
    """Weight memory of pair-code rows, initialised from the memory image; optionally writable.

    Parameters
    ----------
    codes : uint8 array [rows, lanes]
        Initial contents, pair codes (see :func:`nmflow.golden.pairs.memory_codes`).
    kind : ``"block"`` or ``"logic"``
        See :data:`MEMORY_KINDS`.
    writable : bool
        Add the write port ``write``.

    Members
    -------
    read : Out(ReadPort.Signature(addr_width, pair_row(lanes)))
        ``addr``, ``en`` in; ``data`` out, :attr:`latency` cycles after ``en`` (``data`` keeps
        its value while ``en`` is low).
    write : Out(WritePort.Signature(addr_width, pair_row(lanes), granularity=1))
        Only if ``writable``: ``addr``, ``data`` and one enable bit per lane; a row (or any of its
        lanes) per cycle. A read of the row written in the same cycle returns the old contents.

    Throughput: one row read and one row written per cycle.
    """

    def __init__(self, codes, *, kind="block", writable=False):
        if kind not in MEMORY_KINDS:
            raise NmflowError(f"memory kind must be one of {', '.join(map(repr, MEMORY_KINDS))}, "
                             f"not {kind!r}")
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] < 1 or codes.shape[1] < 1:
            raise NmflowError(f"codes must be a [rows, lanes] array with at least one row, "
                             f"not shape {list(codes.shape)}")
        if (codes > 0b11).any() or (codes < 0).any():
            raise NmflowError(f"codes must be 2-bit pair codes (0 to 3), "
                             f"not {int(codes[(codes > 3) | (codes < 0)][0])}")
        self._codes = codes.astype(np.uint8)
        self._kind = kind
        self._writable = bool(writable)
        depth, lanes = codes.shape
        members = {"read": Out(ReadPort.Signature(addr_width=index_bits(depth),
                                                  shape=pair_row(lanes)))}
        if writable:
            members["write"] = Out(WritePort.Signature(addr_width=index_bits(depth),
                                                       shape=pair_row(lanes), granularity=1))
        super().__init__(members)

    depth = property(lambda self: self._codes.shape[0])
    lanes = property(lambda self: self._codes.shape[1])
    writable = property(lambda self: self._writable)

    @property
    def width(self):
        return 2 * self.lanes

    @property
    def bits(self):
        return self.depth * self.width

    #: Cycles from ``addr``/``en`` to ``data``.
    latency = 1

    def elaborate(self, platform):
        m = Module()
        layout = pair_row(self.lanes)
        init = [layout.from_bits(row) for row in pack_rows(self._codes)]
        m.submodules.mem = mem = Memory(shape=layout, depth=self.depth, init=init)
        if self._kind == "block":
            port = mem.read_port()
            m.d.comb += [port.addr.eq(self.read.addr), port.en.eq(self.read.en),
                         self.read.data.eq(port.data)]
        else:
            port = mem.read_port(domain="comb")
            m.d.comb += port.addr.eq(self.read.addr)
            with m.If(self.read.en):
                m.d.sync += self.read.data.eq(port.data)
        if self._writable:
            write = mem.write_port(granularity=1)
            m.d.comb += [write.addr.eq(self.write.addr), write.data.eq(self.write.data),
                         write.en.eq(self.write.en)]
        return m
