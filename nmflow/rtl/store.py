"""A single-port memory of any depth and width, from block RAM, flip-flops or the iCE40UP5K's
SPRAMs: the host link's batch memories (:class:`~nmflow.rtl.hostlink.HostLink`) are built from
it, so that a board whose block RAM the engine fills keeps its batches in SPRAM."""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..errors import NmflowError, check_choice, check_int
from ..golden.plan import SPRAM_BITS, SPRAM_WORDS, index_bits, spram_tiles
from .spram import SPRAM

__all__ = ["Store", "STORE_KINDS"]

#: Where a :class:`Store` lives: block RAM, flip-flops (``"logic"``) or SPRAM.
STORE_KINDS = ("block", "logic", "spram")


class Store(wiring.Component):
    """``depth`` words of ``width`` bits behind one port, with the SPRAM's rules whatever it is
    built from, so that a design behaves the same on each.

    Parameters
    ----------
    depth, width : int
        Words (at least 1) and bits per word (at least 1).
    kind : ``"block"``, ``"logic"`` or ``"spram"``
        :data:`STORE_KINDS`. ``"spram"`` tiles :class:`~nmflow.rtl.spram.SPRAM` s: a word across
        ``ceil(width / 16)`` of them, banks of ``spram_depth`` words behind the high address bits
        (:attr:`sprams` in all). Its contents are undefined until written, as for the others.
    spram_depth : int
        Words of each SPRAM bank: 16,384 on the silicon (the default); a smaller power of two
        makes lighter simulations of the behavioural model, and more banks.

    Members
    -------
    addr : In(index_bits(depth))
        The word written or read this cycle.
    we : In(1)
        Write ``wdata`` at ``addr`` this cycle (whole words).
    wdata : In(width)
    re : In(1)
        Read the word at ``addr`` this cycle (ignored while ``we`` is high): it is on ``rdata``
        from the next cycle on, and stays there until the next read.
    rdata : Out(width)
    """

    def __init__(self, depth, width, *, kind="block", spram_depth=SPRAM_WORDS):
        check_int("store depth", depth, 1)
        check_int("store width", width, 1)
        self._kind = check_choice("store kind", kind, STORE_KINDS)
        if kind == "spram" and (not isinstance(spram_depth, int) or isinstance(spram_depth, bool)
                                or spram_depth < 2 or spram_depth & (spram_depth - 1)
                                or spram_depth > SPRAM_WORDS):
            raise NmflowError(f"spram_depth must be a power of two from 2 to {SPRAM_WORDS}, "
                              f"not {spram_depth!r}")
        self._depth, self._width, self._spram_depth = depth, width, spram_depth
        super().__init__({"addr": In(index_bits(depth)), "we": In(1), "wdata": In(width),
                          "re": In(1), "rdata": Out(width)})

    depth = property(lambda self: self._depth)
    width = property(lambda self: self._width)
    kind = property(lambda self: self._kind)

    @property
    def bits(self):
        return self._depth * self._width

    @property
    def sprams(self):
        """SPRAMs of a ``"spram"`` store on the silicon (0 for the other kinds)."""
        if self._kind != "spram":
            return 0
        columns, banks = spram_tiles(self._depth, self._width)
        return columns * banks

    def elaborate(self, platform):
        if self._kind == "spram":
            return self._elaborate_spram()
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(self._width), depth=self._depth, init=[],
                                        attrs={"ram_style": self._kind})
        wr, rd = mem.write_port(), mem.read_port(transparent_for=())
        m.d.comb += [wr.addr.eq(self.addr), wr.data.eq(self.wdata), wr.en.eq(self.we),
                     rd.addr.eq(self.addr), rd.en.eq(self.re & ~self.we),
                     self.rdata.eq(rd.data)]
        return m

    def _elaborate_spram(self):
        m = Module()
        columns = -(-self._width // SPRAM_BITS)
        banks = -(-self._depth // self._spram_depth)
        word_bits = index_bits(self._spram_depth)
        addr = self.addr
        bank = addr[word_bits:] if len(addr) > word_bits else 0
        data_in = Signal(columns * SPRAM_BITS)
        m.d.comb += data_in.eq(self.wdata)
        reading = self.re & ~self.we
        outputs = []
        for b in range(banks):
            words = []
            for c in range(columns):
                spram = SPRAM(self._spram_depth)
                m.submodules[f"spram_b{b}_c{c}"] = spram
                m.d.comb += [
                    spram.ADDRESS.eq(addr[:word_bits]),
                    spram.DATAIN.eq(data_in[c * SPRAM_BITS:(c + 1) * SPRAM_BITS]),
                    spram.MASKWREN.eq(0b1111), spram.WREN.eq(self.we),
                    spram.CHIPSELECT.eq((bank == b) & (self.we | reading)),
                    spram.STANDBY.eq(0), spram.SLEEP.eq(0), spram.POWEROFF.eq(1),
                ]
                words.append(spram.DATAOUT)
            outputs.append(Cat(*words))
        # The word comes a cycle after the read, from the bank it was read in; the output is
        # held in a register until the next read (the primitive's DATAOUT is not relied on).
        read_bank, fresh, held = Signal(range(max(banks, 2))), Signal(), Signal(self._width)
        m.d.sync += fresh.eq(reading)
        with m.If(reading):
            m.d.sync += read_bank.eq(bank)
        current = outputs[0] if banks == 1 else Array(outputs)[read_bank]
        value = Mux(fresh, current[:self._width], held)
        m.d.sync += held.eq(value)
        m.d.comb += self.rdata.eq(value)
        return m
