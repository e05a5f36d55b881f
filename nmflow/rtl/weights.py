"""Weight memory holding 2T2R pair codes, one row of ``lanes`` codes per read."""

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["PairCode", "pair_row", "WeightMemory", "MEMORY_KINDS"]

#: How the weight rows are stored: ``"block"`` infers block RAM (EBR on iCE40, DP16KD on ECP5) with
#: a synchronous read port, initialised with the bitstream; ``"logic"`` builds the same synchronous
#: port from flip-flops and LUTs (tiny networks, or a device without block RAM).
MEMORY_KINDS = ("block", "logic")


class PairCode(data.Struct):
    """A 2T2R pair: ``blb`` in bit 0, ``bl`` in bit 1, 1 meaning LRS (DESIGN.md, contract 2)."""
    blb: 1
    bl: 1


def pair_row(lanes):
    """Layout of one memory row: ``lanes`` pair codes, lane ``p`` at bits ``[2p + 1 : 2p]``."""
    return data.ArrayLayout(PairCode, lanes)


class WeightMemory(wiring.Component):
    """Read-only weight memory of pair-code rows, initialised from the hardware model.

    Parameters
    ----------
    lanes : int
        Pair codes per row.
    rows : list of int
        Initial contents (see :func:`nmflow.golden.pairs.memory_image`).
    kind : ``"block"`` or ``"logic"``
        See :data:`MEMORY_KINDS`.

    Members
    -------
    addr : In(ceil_log2(depth))
    en : In(1)
        Read enable; ``data`` keeps its value while low.
    data : Out(pair_row(lanes))
        The row at ``addr``, :attr:`latency` cycles after ``en``.

    Throughput: one row per cycle.
    """

    def __init__(self, lanes, rows, *, kind="block"):
        if kind not in MEMORY_KINDS:
            raise ValueError(f"memory kind must be one of {', '.join(map(repr, MEMORY_KINDS))}, "
                             f"not {kind!r}")
        if not rows:
            raise ValueError("rows must hold at least one row, not 0")
        self._lanes = lanes
        self._rows = list(rows)
        self._kind = kind
        super().__init__({
            "addr": In(max(1, ceil_log2(len(self._rows)))),
            "en": In(1),
            "data": Out(pair_row(lanes)),
        })

    @property
    def depth(self):
        return len(self._rows)

    @property
    def width(self):
        return 2 * self._lanes

    @property
    def bits(self):
        return self.depth * self.width

    @property
    def latency(self):
        """Cycles from ``addr``/``en`` to ``data``."""
        return 1

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(self.width), depth=self.depth,
                                        init=self._rows)
        if self._kind == "block":
            port = mem.read_port()
            m.d.comb += [port.addr.eq(self.addr), port.en.eq(self.en),
                         self.data.eq(port.data)]
        else:
            port = mem.read_port(domain="comb")
            m.d.comb += port.addr.eq(self.addr)
            with m.If(self.en):
                m.d.sync += self.data.eq(port.data)
        return m
