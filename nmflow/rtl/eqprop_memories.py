"""The EqProp unit's memories: ``L`` weight banks, the bias memory, ``L`` state banks, and the
host parameter port that reaches them while the unit is idle.

The memory map is :class:`~nmflow.golden.eqprop_layout.EqPropLayout`'s. Every memory has one
synchronous read port and one write port; a read's word comes out in the cycle after its
address. The signatures below are seen from a client (it drives the address).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["EqPropMemories", "read_signature", "write_signature", "HOST_WEIGHTS", "HOST_BIASES",
           "HOST_STATES"]

#: ``p_sel`` of the host port: the weight banks, the biases, the state banks (read only).
HOST_WEIGHTS, HOST_BIASES, HOST_STATES = 0, 1, 2


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


def host_words(plan):
    """Raw words of the host port's read data (and of the observation stream), one per bank."""
    return data.ArrayLayout(plan.word_bits, plan.lanes)


class EqPropMemories(wiring.Component):
    """The weight banks, the bias memory and the state banks, with the host port's muxing.

    Parameters
    ----------
    plan : :class:`~nmflow.golden.eqprop_plan.EqPropPlan`
    params : dict
        The raw weights and biases after reset (``{"W": [...], "b": [...]}``).
    host_port : bool
        Add the host port.

    Members
    -------
    weights : In(read_signature(one address per bank, weight_words))
    weight_write : In(write_signature(update_addr_shape, one weight, one enable per bank))
    biases : In(read_signature(bias_addr_shape, one weight))
    bias_write : In(write_signature(update_addr_shape, one weight))
    states : In(read_signature(state_addr_shape, state_words)), one address for every bank
    state_write : In(write_signature(state_addr_shape, state_words, one enable per bank))
    host : In(1)
        The host port may use the memories (the sequencer is idle, nothing is in flight).
    p_sel, p_addr, p_we, p_wdata, p_rdata : only with ``host_port``
        While ``host``: ``p_addr`` replaces every read address; ``p_we`` writes ``p_wdata[b]``
        to weight bank ``b`` (``p_sel`` :data:`HOST_WEIGHTS`) or ``p_wdata[0]`` to the biases
        (:data:`HOST_BIASES`), over the client's write. ``p_rdata`` is the raw words the memory
        chosen by the previous cycle's ``p_sel`` reads (the bias in word 0, the others 0).
    """

    def __init__(self, plan, params, *, host_port=False):
        self._plan = plan
        self._params = params
        self._host_port = bool(host_port)
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

        weight_image = lay.weight_image(self._params)
        weight_reads, weight_writes = [], []
        for b in range(L):
            mem = Memory(shape=weight, depth=lay.wdepth, init=weight_image[b])
            m.submodules[f"wbank{b}"] = mem
            weight_reads.append(mem.read_port())
            weight_writes.append(mem.write_port())
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
            self._host(m, weight_reads, weight_writes, bias_read, bias_write, state_reads)
        return m

    def _host(self, m, weight_reads, weight_writes, bias_read, bias_write, state_reads):
        """The host port: its address and writes replace the clients' while ``host``; its read
        data follows the previous cycle's ``p_sel``."""
        L = self._plan.lanes
        with m.If(self.host):
            m.d.comb += [port.addr.eq(self.p_addr) for port in weight_reads + state_reads]
            m.d.comb += bias_read.addr.eq(self.p_addr)
            with m.If(self.p_we & (self.p_sel == HOST_WEIGHTS)):
                for b in range(L):
                    m.d.comb += [weight_writes[b].addr.eq(self.p_addr),
                                 weight_writes[b].data.eq(self.p_wdata[b]),
                                 weight_writes[b].en.eq(1)]
            with m.If(self.p_we & (self.p_sel == HOST_BIASES)):
                m.d.comb += [bias_write.addr.eq(self.p_addr), bias_write.data.eq(self.p_wdata[0]),
                             bias_write.en.eq(1)]
        read_sel = Signal(2)
        m.d.sync += read_sel.eq(self.p_sel)
        for b in range(L):
            with m.Switch(read_sel):
                with m.Case(HOST_WEIGHTS):
                    m.d.comb += self.p_rdata[b].eq(weight_reads[b].data.as_unsigned())
                with m.Case(HOST_BIASES):
                    m.d.comb += self.p_rdata[b].eq(bias_read.data.as_unsigned() if b == 0 else 0)
                with m.Default():
                    m.d.comb += self.p_rdata[b].eq(state_reads[b].data)
