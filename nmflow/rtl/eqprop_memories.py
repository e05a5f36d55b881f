"""The EqProp unit's memories: ``L`` weight banks, the bias memory, ``L`` state banks, and the
host parameter port that reaches them while the unit is idle.

With binary weights the weight banks hold the hidden weights and ``L`` code banks beside them
hold the binary weights as pair codes (:mod:`nmflow.golden.pairs`: ``PLUS`` where ``W_h >= 0``,
else ``MINUS``), as the engine keeps its weights: the dynamics read the codes, the update reads
the hidden weights and writes both. The hidden banks are block RAM (``storage="memory"``) or one
single-port 16K x 16 RAM each (``"spram"``: a write takes the port for its cycle; the sequencer
never reads in that cycle).

The memory map is :class:`~nmflow.golden.eqprop_layout.EqPropLayout`'s. Every memory has one
synchronous read port and one write port; a read's word comes out in the cycle after its
address. The signatures below are seen from a client (it drives the address).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.eqprop_plan import CODE_BITS
from ..golden.pairs import MINUS, PLUS, sign_codes
from .spram import SPRAM

__all__ = ["EqPropMemories", "read_signature", "write_signature", "HOST_WEIGHTS", "HOST_BIASES",
           "HOST_STATES", "HOST_CODES", "code_words", "pair_code"]

#: ``p_sel`` of the host port: the weight banks, the biases, the state banks (read only), the
#: code banks (binary weights; read only: a weight's write writes its code).
HOST_WEIGHTS, HOST_BIASES, HOST_STATES, HOST_CODES = 0, 1, 2, 3


def read_signature(addr_shape, data_shape):
    """A client's synchronous read: it drives ``addr``; ``data`` is the word (or the words, one
    per bank) at the previous cycle's address."""
    return wiring.Signature({"addr": Out(addr_shape), "data": In(data_shape)})


def write_signature(addr_shape, data_shape, enables=1):
    """A client's write: ``data`` goes to ``addr`` of each memory whose bit of ``en`` is set."""
    return wiring.Signature({"addr": Out(addr_shape), "data": Out(data_shape),
                             "en": Out(enables)})


def weight_addr_shape(plan):
    return range(plan.layout.wdepth)


def bias_addr_shape(plan):
    return range(max(plan.layout.bdepth, 2))


def state_addr_shape(plan):
    return range(plan.layout.sdepth)


def update_addr_shape(plan):
    """A parameter's address in its weight bank or in the bias memory."""
    return range(max(plan.layout.wdepth, plan.layout.bdepth, 2))


def weight_words(plan):
    return data.ArrayLayout(plan.weight_format.shape(), plan.lanes)


def state_words(plan):
    return data.ArrayLayout(plan.state_format.shape(), plan.lanes)


def code_words(plan):
    """The pair codes of a chunk, one per bank."""
    return data.ArrayLayout(CODE_BITS, plan.lanes)


def pair_code(weight):
    """The pair code of the binary weight ``sign(weight)`` (``+1`` at zero): ``PLUS`` or
    ``MINUS`` by the sign bit of a (signed) hidden weight."""
    return Mux(weight[-1], MINUS, PLUS)


def host_words(plan):
    """Raw words of the host port's read data (and of the observation stream), one per bank."""
    return data.ArrayLayout(plan.word_bits, plan.lanes)


class EqPropMemories(wiring.Component):
    """The weight banks (with binary weights also the code banks), the bias memory and the state
    banks, with the host port's muxing.

    Parameters
    ----------
    plan : :class:`~nmflow.golden.eqprop_plan.EqPropPlan`
        Its ``storage`` says where binary hidden weights live.
    params : dict
        The raw weights and biases after reset (``{"W": [...], "b": [...]}``); with
        ``storage="spram"`` only the pair codes and the biases take them (the host loads the
        hidden weights).
    host_port : bool
        Add the host port.

    Members
    -------
    weights : In(read_signature(one address per bank, weight_words))
        The weights (binary: the hidden weights).
    codes : In(read_signature(one address per bank, code_words)), binary weights only
    weight_write : In(write_signature(update_addr_shape, one weight, one enable per bank))
        Binary weights: the hidden weight, and its pair code to the code bank.
    biases : In(read_signature(bias_addr_shape, one weight))
    bias_write : In(write_signature(update_addr_shape, one weight))
    states : In(read_signature(state_addr_shape, state_words)), one address for every bank
    state_write : In(write_signature(state_addr_shape, state_words, one enable per bank))
    host : In(1)
        The host port may use the memories (the sequencer is idle, nothing is in flight).
    p_sel, p_addr, p_we, p_wdata, p_rdata : only with ``host_port``
        While ``host``: ``p_addr`` replaces every read address; ``p_we`` writes ``p_wdata[b]``
        to weight bank ``b`` (``p_sel`` :data:`HOST_WEIGHTS`; binary: its code too) or
        ``p_wdata[0]`` to the biases (:data:`HOST_BIASES`), over the client's write (with
        ``storage="spram"`` a weight write is registered and lands in the next cycle: read no
        weight in that cycle).
        ``p_rdata`` is the raw words the memory chosen by the previous cycle's ``p_sel`` reads
        (the bias in word 0, the others 0; :data:`HOST_CODES`: the codes): the words at
        ``p_addr`` in the second cycle after ``p_addr`` and ``p_sel`` are set and held (the
        weight banks' words pass one more register).
    """

    def __init__(self, plan, params, *, host_port=False):
        self._plan = plan
        self._params = params
        self._host_port = bool(host_port)
        self._binary = plan.config.weights == "binary"
        L = plan.lanes
        weight = plan.weight_format.shape()
        members = {
            "weights": In(read_signature(data.ArrayLayout(weight_addr_shape(plan), L),
                                         weight_words(plan))),
            "weight_write": In(write_signature(update_addr_shape(plan), weight, L)),
            "biases": In(read_signature(bias_addr_shape(plan), weight)),
            "bias_write": In(write_signature(update_addr_shape(plan), weight)),
            "states": In(read_signature(state_addr_shape(plan), state_words(plan))),
            "state_write": In(write_signature(state_addr_shape(plan), state_words(plan), L)),
            "host": In(1),
        }
        if self._binary:
            members["codes"] = In(read_signature(data.ArrayLayout(weight_addr_shape(plan), L),
                                                 code_words(plan)))
        if host_port:
            members.update({
                "p_sel": In(2),
                "p_addr": In(plan.host_addr_bits),
                "p_we": In(1),
                "p_wdata": In(weight_words(plan)),
                "p_rdata": Out(host_words(plan)),
            })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        plan, L, lay = self._plan, self._plan.lanes, self._plan.layout
        weight, state = plan.weight_format.shape(), plan.state_format.shape()

        # the weight ports (binary: the hidden weights' and the codes'), driven below by the
        # clients and, while ``host``, by the host port
        weight_reads = [_ReadPort(weight_addr_shape(plan), weight, f"wread{b}")
                        for b in range(L)]
        weight_writes = [_WritePort(update_addr_shape(plan), weight, f"wwrite{b}")
                         for b in range(L)]
        code_reads = self._weight_banks(m, weight_reads, weight_writes)
        bias_mem = Memory(shape=weight, depth=lay.bdepth, init=lay.bias_image(self._params))
        m.submodules.bias = bias_mem
        bias_read, bias_write = bias_mem.read_port(), bias_mem.write_port()
        state_reads, state_writes = [], []
        for b in range(L):
            mem = Memory(shape=state, depth=lay.sdepth, init=[])
            m.submodules[f"sbank{b}"] = mem
            state_reads.append(mem.read_port())
            state_writes.append(mem.write_port())

        # the clients' ports
        for b in range(L):
            m.d.comb += [
                weight_reads[b].addr.eq(self.weights.addr[b]),
                self.weights.data[b].eq(weight_reads[b].data),
                weight_writes[b].addr.eq(self.weight_write.addr),
                weight_writes[b].data.eq(self.weight_write.data),
                weight_writes[b].en.eq(self.weight_write.en[b]),
                state_reads[b].addr.eq(self.states.addr),
                self.states.data[b].eq(state_reads[b].data),
                state_writes[b].addr.eq(self.state_write.addr),
                state_writes[b].data.eq(self.state_write.data[b]),
                state_writes[b].en.eq(self.state_write.en[b]),
            ]
        m.d.comb += [
            bias_read.addr.eq(self.biases.addr), self.biases.data.eq(bias_read.data),
            bias_write.addr.eq(self.bias_write.addr), bias_write.data.eq(self.bias_write.data),
            bias_write.en.eq(self.bias_write.en),
        ]
        if self._host_port:
            self._host(m, weight_reads + code_reads, weight_writes, bias_read, bias_write,
                       state_reads, code_reads)
        return m

    def _weight_banks(self, m, reads, writes):
        """The weight banks behind the ports ``reads`` and ``writes`` (one of each per bank);
        with binary weights the code banks too: their reads at the ``codes`` addresses (the
        host's while ``host``), their writes the codes of the weight writes. Returns the code
        banks' read ports (none without binary weights)."""
        plan, L, lay = self._plan, self._plan.lanes, self._plan.layout
        code_reads = []
        image = lay.weight_image(self._params)
        for b in range(L):
            if plan.storage == "spram":
                m.submodules[f"hbank{b}"] = ram = SPRAM(depth=lay.wdepth)
                # one port: a write takes it for its cycle
                m.d.comb += [ram.ADDRESS.eq(Mux(writes[b].en, writes[b].addr, reads[b].addr)),
                             ram.DATAIN.eq(writes[b].data), ram.MASKWREN.eq(0b1111),
                             ram.WREN.eq(writes[b].en), ram.CHIPSELECT.eq(1),
                             ram.POWEROFF.eq(1), reads[b].data.eq(ram.DATAOUT)]
            else:
                name = "hbank" if self._binary else "wbank"
                mem = Memory(shape=plan.weight_format.shape(), depth=lay.wdepth, init=image[b])
                m.submodules[f"{name}{b}"] = mem
                _connect(m, mem.read_port(), mem.write_port(), reads[b], writes[b])
            if self._binary:
                codes = Memory(shape=CODE_BITS, depth=lay.wdepth,
                               init=[sign_codes(w) for w in image[b]])
                m.submodules[f"cbank{b}"] = codes
                read, write = codes.read_port(), codes.write_port()
                code_reads.append(read)
                m.d.comb += [read.addr.eq(self.codes.addr[b]), self.codes.data[b].eq(read.data),
                             write.addr.eq(writes[b].addr), write.en.eq(writes[b].en),
                             write.data.eq(pair_code(writes[b].data))]
        return code_reads

    def _host(self, m, reads, weight_writes, bias_read, bias_write, state_reads, code_reads):
        """The host port: its address (to every port of ``reads``, the state banks' and the
        bias memory's) and writes replace the clients' while ``host``; its read data follows
        the previous cycle's ``p_sel``."""
        L = self._plan.lanes
        weight_reads = reads[:L]
        write_weights = self.host & self.p_we & (self.p_sel == HOST_WEIGHTS)
        addr, words = self.p_addr, self.p_wdata
        if self._plan.storage == "spram":
            # the host's weight writes registered on their way to the SPRAMs at the die's edge
            # (they land a cycle later; the update's are registered in its last stage)
            registered = Signal(name="host_write")
            addr = Signal.like(self.p_addr, name="host_write_addr")
            words = Signal.like(self.p_wdata, name="host_write_data")
            m.d.sync += [registered.eq(write_weights), addr.eq(self.p_addr),
                         words.eq(self.p_wdata)]
            write_weights = registered
        with m.If(write_weights):
            for b in range(L):
                m.d.comb += [weight_writes[b].addr.eq(addr), weight_writes[b].data.eq(words[b]),
                             weight_writes[b].en.eq(1)]
        with m.If(self.host):
            m.d.comb += [port.addr.eq(self.p_addr) for port in reads + state_reads]
            m.d.comb += bias_read.addr.eq(self.p_addr)
            with m.If(self.p_we & (self.p_sel == HOST_BIASES)):
                m.d.comb += [bias_write.addr.eq(self.p_addr), bias_write.data.eq(self.p_wdata[0]),
                             bias_write.en.eq(1)]
        read_sel = Signal(2)
        m.d.sync += read_sel.eq(self.p_sel)
        # the weight banks' words registered once more: the block RAM's slow output (5.8 ns
        # on the ECP5) went through the multiplexer below into the link's register across
        # the die (the ULX3S build's longest path at 16 lanes); the other memories' words come
        # from their read ports' registers
        held = [Signal.like(weight_reads[b].data, name=f"host_weight{b}") for b in range(L)]
        m.d.sync += [held[b].eq(weight_reads[b].data) for b in range(L)]
        for b in range(L):
            with m.Switch(read_sel):
                with m.Case(HOST_WEIGHTS):
                    m.d.comb += self.p_rdata[b].eq(held[b].as_unsigned())
                with m.Case(HOST_BIASES):
                    m.d.comb += self.p_rdata[b].eq(bias_read.data.as_unsigned() if b == 0 else 0)
                with m.Case(HOST_CODES):
                    m.d.comb += self.p_rdata[b].eq(code_reads[b].data if code_reads else 0)
                with m.Default():
                    m.d.comb += self.p_rdata[b].eq(state_reads[b].data)


class _ReadPort:
    """The signals of a synchronous read port (``addr``, ``data`` a cycle later)."""

    def __init__(self, addr_shape, data_shape, name):
        self.addr = Signal(addr_shape, name=f"{name}_addr")
        self.data = Signal(data_shape, name=f"{name}_data")


class _WritePort:
    """The signals of a write port (``addr``, ``data``, ``en``)."""

    def __init__(self, addr_shape, data_shape, name):
        self.addr = Signal(addr_shape, name=f"{name}_addr")
        self.data = Signal(data_shape, name=f"{name}_data")
        self.en = Signal(name=f"{name}_en")


def _connect(m, read, write, read_signals, write_signals):
    """Drive a memory's ports ``read`` and ``write`` from the port signals."""
    m.d.comb += [read.addr.eq(read_signals.addr), read_signals.data.eq(read.data),
                 write.addr.eq(write_signals.addr), write.data.eq(write_signals.data),
                 write.en.eq(write_signals.en)]
