"""Weight memory holding 2T2R pair codes, one row of ``lanes`` codes per read, optionally writable."""

import numpy as np
from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from ..errors import NmflowError
from ..golden.pairs import pack_rows
from ..golden.plan import MEMORY_KINDS, SPRAM_BITS, SPRAM_WORDS, WEIGHT_KINDS, index_bits, spram_tiles

__all__ = ["PairCode", "pair_row", "PairReadSignature", "WeightMemory", "MEMORY_KINDS",
           "WEIGHT_KINDS"]


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
        Initial contents, pair codes (see :func:`nmflow.golden.pairs.memory_codes`); only their
        shape with ``"spram"``, which starts empty.
    kind : ``"block"``, ``"logic"`` or ``"spram"``
        See :data:`WEIGHT_KINDS`. ``"spram"`` tiles :class:`~nmflow.rtl.spram.SPRAM` s
        (:func:`~nmflow.golden.plan.spram_tiles`): a row across ``ceil(2 * lanes / 16)`` of them,
        banks of 16,384 rows selected by the high address bits. It is always writable, and its
        rows must be written before they are read. An SPRAM write enable covers a nibble, two
        lanes: write whole rows (the lanes' enables all high), or enable both lanes of a pair.
    writable : bool
        Add the write port ``write`` (always there with ``"spram"``).
    spram_depth : int
        Words of each SPRAM bank: 16,384 on the silicon (the default); a smaller power of two
        makes lighter simulations of the behavioural model, and more banks of it.

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

    def __init__(self, codes, *, kind="block", writable=False, spram_depth=SPRAM_WORDS):
        if kind not in WEIGHT_KINDS:
            raise NmflowError(f"memory kind must be one of {', '.join(map(repr, WEIGHT_KINDS))}, "
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
        self._writable = bool(writable) or kind == "spram"
        writable = self._writable
        depth, lanes = codes.shape
        if kind == "spram":
            if not isinstance(spram_depth, int) or isinstance(spram_depth, bool) \
                    or spram_depth < 2 or spram_depth & (spram_depth - 1) \
                    or spram_depth > SPRAM_WORDS:
                raise NmflowError(f"spram_depth must be a power of two from 2 to {SPRAM_WORDS}, "
                                  f"not {spram_depth!r}")
            self._spram_depth = spram_depth
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

    @property
    def sprams(self):
        """SPRAMs of a ``"spram"`` memory (0 otherwise)."""
        if self._kind != "spram":
            return 0
        columns, banks = spram_tiles(self.depth, self.width)
        return columns * banks

    def elaborate(self, platform):
        if self._kind == "spram":
            return self._elaborate_spram()
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

    def _elaborate_spram(self):
        from .spram import SPRAM
        m = Module()
        columns = spram_tiles(self.depth, self.width)[0]
        banks = -(-self.depth // self._spram_depth)
        word_bits = index_bits(self._spram_depth)
        bank_bits = max(0, self.read.addr.shape().width - word_bits)
        write = self.write
        writing = write.en.any()
        addr = Mux(writing, write.addr, self.read.addr)
        bank = addr[word_bits:] if bank_bits else 0
        # Nibble enables: an SPRAM nibble holds two lanes (one lane when lanes is 1).
        lane_en = write.en
        wide = columns * SPRAM_BITS
        data_in = Signal(wide)
        nibble_en = Signal(wide // 4)
        m.d.comb += data_in.eq(write.data.as_value())
        m.d.comb += [nibble_en[k].eq(lane_en[2 * k:2 * k + 2].any())
                     for k in range(min(len(nibble_en), -(-len(lane_en) // 2)))]
        outputs = []
        for b in range(banks):
            row = []
            for c in range(columns):
                spram = SPRAM(self._spram_depth)
                m.submodules[f"spram_b{b}_c{c}"] = spram
                selected = bank == b
                m.d.comb += [
                    spram.ADDRESS.eq(addr[:word_bits] if word_bits < len(addr) else addr),
                    spram.DATAIN.eq(data_in[c * SPRAM_BITS:(c + 1) * SPRAM_BITS]),
                    spram.MASKWREN.eq(nibble_en[4 * c:4 * c + 4]),
                    spram.WREN.eq(writing),
                    spram.CHIPSELECT.eq(selected & (writing | self.read.en)),
                    spram.STANDBY.eq(0), spram.SLEEP.eq(0), spram.POWEROFF.eq(1),
                ]
                row.append(spram.DATAOUT)
            outputs.append(Cat(*row))
        # The row comes a cycle after the read, from the bank it was read in; the output holds
        # until the next read (the primitive's DATAOUT is not relied on to hold).
        read_bank = Signal(range(max(banks, 2)))
        fresh = Signal()
        held = Signal(wide)
        m.d.sync += fresh.eq(self.read.en & ~writing)
        with m.If(self.read.en & ~writing):
            m.d.sync += read_bank.eq(bank)
        current = outputs[0] if banks == 1 else Array(outputs)[read_bank]
        value = Mux(fresh, current, held)
        m.d.sync += held.eq(value)
        m.d.comb += self.read.data.eq(value[:self.width])
        return m
