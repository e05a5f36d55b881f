"""The sequencer's walk over a network with convolutions: the rows each layer reads, in order.

A convolution (:class:`~nmflow.golden.plan.Walk`) is walked pooled pixel by pooled pixel (row
by row of the pooled map), then group by group of ``pe`` output channels, then the positions of
the pooling window (the pre-pooling pixels whose maximum the pooled pixel takes), then the
kernel's rows and columns, then the chunks of one input pixel's channels: the weight row is
``base + group * per + (ky * kernel + kx) * chunks + chunk`` and the activation row is
``((y + ky - padding) * width + (x + kx - padding)) * chunks + chunk``, where ``(y, x)`` is the
pre-pooling pixel; a kernel position outside the map reads 0 (``zero``). A fully connected layer
is the same walk on a 1 x 1 map whose one pixel has ``per`` chunks (no kernel, no pooling).

Every address is kept in a register and moved by constants (no multiplier): the activation row
steps by one along a kernel row, by a per-layer step to the next kernel row, and back to the
window's origin at the next window position; the origins of the window positions and of the
pooled pixels are registers of their own. The layer's constants are loaded into registers when
it begins.
"""

from amaranth.hdl import Array, Const, Signal, signed

from ..golden.plan import index_bits

__all__ = ["ConvWalk"]


def _layer_constants(plan):
    """Per layer, the constants of its walk (plain ints)."""
    out = []
    for walk in plan.walks:
        c, w = walk.chunks, walk.width
        pad = walk.padding
        out.append({
            "chunk_last": c - 1, "kernel_last": walk.kernel - 1, "pool_last": walk.pool - 1,
            "x_last": walk.out_width - 1, "y_last": walk.out_height - 1,
            "group_last": walk.groups - 1, "per": walk.per, "chunks": c,
            "height": walk.height, "width": w, "pad": -pad,
            # from a kernel row's last chunk to the next kernel row's first
            "kernel_step": (w - walk.kernel) * c + 1,
            # from a window position's origin to the next row of the pooling window
            "window_step": (w - walk.pool + 1) * c,
            # from a pooled pixel's first origin to the next pooled pixel's, and row's
            "pixel_step": walk.pool * c, "row_step": walk.pool * w * c,
            # the first origin: the pixel (-padding, -padding)
            "origin": (-pad * w - pad) * c,
        })
    return out


class ConvWalk:
    """Walk the rows of a network with convolutions (see the module docstring).

    The same interface as the fully connected walk of :mod:`nmflow.rtl.sequencer`:
    :meth:`begin` (an inference starts at layer 0), :meth:`enter` (the next layer begins),
    :meth:`step` (a row was issued), :meth:`drive` (the command of the current row), and
    ``layer``, ``final`` (registers), ``group_done`` and ``layer_done`` (combinational: the
    group's, the layer's last row is being issued).
    """

    def __init__(self, m, plan):
        self.m, self.plan = m, plan
        self.consts = consts = _layer_constants(plan)
        self.planes = plan.passes[0]

        self.cur, self.table = {}, {}
        for name in consts[0]:
            values = [c[name] for c in consts]
            lo, hi = min(values + [0]), max(values + [1])
            shape = signed(max(lo.bit_length(), hi.bit_length()) + 1) if lo < 0 \
                else range(hi + 1)
            self.cur[name] = Signal(shape, name=f"cur_{name}")
            self.table[name] = Array(Const(v, shape) for v in values)
        self.layer = Signal(range(max(plan.n_layers, 2)))
        self.final = Signal()
        side = max(max(w.height, w.width) for w in plan.walks) + max(
            w.kernel + w.pool for w in plan.walks)
        coord = signed(index_bits(side) + 2)
        span = max(max(abs(c["origin"]) for c in consts), plan.act_rows) + max(
            c["row_step"] + c["kernel_step"] + c["window_step"] for c in consts)
        row = signed(index_bits(span) + 2)
        counters = {"chunk": "chunk_last", "kx": "kernel_last", "ky": "kernel_last",
                    "wx": "pool_last", "wy": "pool_last", "group": "group_last",
                    "px": "x_last", "py": "y_last"}
        self.count = {name: Signal(self.cur[last].shape(), name=name)
                      for name, last in counters.items()}
        self.end = {name: Signal(name=f"{name}_end") for name in counters}
        self.last_of = counters
        self.plane = Signal(plan.plane_bits)
        self.plane_end = Signal()
        self.single = Signal()
        # addresses: the weight row, the group's first, the layer's first
        self.waddr = Signal(plan.addr_bits)
        self.gaddr = Signal(plan.addr_bits)
        self.lbase = Signal(plan.addr_bits)
        # activation rows: the one read, the window position's origin, the pooled pixel's
        # first origin and its pooled row's
        self.arow, self.origin, self.pbase, self.prow = (Signal(row, name=n) for n in
                                                         ("arow", "origin", "pbase", "prow"))
        # map coordinates of the pixel read, of the origin, of the pooled pixel's first origin
        self.ix, self.iy, self.ox, self.oy, self.pox, self.poy = (
            Signal(coord, name=n) for n in ("ix", "iy", "ox", "oy", "pox", "poy"))
        self.hidden = Signal(plan.hidden_bits)
        self.hbase = Signal(plan.hidden_bits)
        self.out_row = Signal(index_bits(plan.hidden_rows))
        self.group_done, self.layer_done = Signal(), Signal()

    def _restart(self, name):
        """Statements: counter ``name`` back to 0 (its end flag: whether it has one value)."""
        return [self.count[name].eq(0), self.end[name].eq(self.cur[self.last_of[name]] == 0)]

    def _advance(self, name):
        counter, last = self.count[name], self.cur[self.last_of[name]]
        return [counter.eq(counter + 1), self.end[name].eq(counter + 1 == last)]

    def enter(self, index, base=None, hidden=None):
        """Load layer ``index``'s constants and start its walk; its rows begin at ``base`` and
        its groups' thresholds at ``hidden`` (by default where the last layer's ended)."""
        m, plan = self.m, self.plan
        if isinstance(index, int):
            values = {name: Const(self.consts[index][name], self.cur[name].shape())
                      for name in self.consts[index]}
        else:
            values = {name: table[index] for name, table in self.table.items()}
        base = self.waddr if base is None else base
        hidden = self.hidden if hidden is None else hidden
        one = (index != 0) if self.planes > 1 else 1
        m.d.sync += [self.cur[name].eq(value) for name, value in values.items()]
        m.d.sync += [self.count[name].eq(0) for name in self.count]
        m.d.sync += [self.end[name].eq(values[last] == 0) for name, last in self.last_of.items()]
        pad, origin = values["pad"], values["origin"]
        m.d.sync += [
            self.layer.eq(index), self.final.eq(index == plan.n_layers - 1),
            self.plane.eq(0), self.single.eq(one), self.plane_end.eq(one),
            self.waddr.eq(base), self.gaddr.eq(base), self.lbase.eq(base),
            self.hidden.eq(hidden), self.hbase.eq(hidden), self.out_row.eq(0),
            self.arow.eq(origin), self.origin.eq(origin), self.pbase.eq(origin),
            self.prow.eq(origin),
            self.ix.eq(pad), self.iy.eq(pad), self.ox.eq(pad), self.oy.eq(pad),
            self.pox.eq(pad), self.poy.eq(pad),
        ]

    def begin(self):
        self.enter(0, base=0, hidden=0)

    def step(self):
        """One row issued (in ``RUN``): move to the next row."""
        m, cur, end = self.m, self.cur, self.end
        sync = m.d.sync
        plane = self.plane
        with m.If(~self.plane_end):         # the next digit of the same row
            sync += [plane.eq(plane + 1), self.plane_end.eq(plane + 1 == self.planes - 1)]
        with m.Else():
            sync += [plane.eq(0), self.plane_end.eq(self.single),
                     self.waddr.eq(self.waddr + 1), self.arow.eq(self.arow + 1)]
            with m.If(~end["chunk"]):
                sync += self._advance("chunk")
            with m.Else():
                sync += self._restart("chunk")
                with m.If(~end["kx"]):      # along the kernel row
                    sync += self._advance("kx") + [self.ix.eq(self.ix + 1)]
                with m.Else():
                    sync += self._restart("kx")
                    with m.If(~end["ky"]):  # the next kernel row
                        sync += self._advance("ky") + [
                            self.iy.eq(self.iy + 1), self.ix.eq(self.ox),
                            self.arow.eq(self.arow + cur["kernel_step"])]
                    with m.Else():
                        sync += self._restart("ky")
                        self._next_position()

    def _next_position(self):
        """A window position's last row: the next position of the pooling window, or the next
        group, pooled pixel or layer."""
        m, cur, end = self.m, self.cur, self.end
        sync = m.d.sync
        ox, oy, origin = self.ox, self.oy, self.origin

        def at(row, x, y):
            sync.__iadd__([self.origin.eq(row), self.arow.eq(row), ox.eq(x), self.ix.eq(x),
                           oy.eq(y), self.iy.eq(y)])

        with m.If(~end["wx"]):
            sync += self._advance("wx") + [self.waddr.eq(self.gaddr)]
            at(origin + cur["chunks"], ox + 1, oy)
        with m.Elif(~end["wy"]):
            sync += self._restart("wx") + self._advance("wy") + [self.waddr.eq(self.gaddr)]
            at(origin + cur["window_step"], ox - cur["pool_last"], oy + 1)
        with m.Else():
            sync += self._restart("wx") + self._restart("wy")
            self._next_group(at)

    def _next_group(self, at):
        m, plan, cur, end = self.m, self.plan, self.cur, self.end
        sync = m.d.sync
        group = self.count["group"]
        m.d.comb += self.group_done.eq(1)
        with m.If(~self.final):
            sync += self.hidden.eq(self.hidden + 1)
        slot_bits = plan.lane_bits - plan.pe_bits
        wraps = (group[:slot_bits] == (1 << slot_bits) - 1) if slot_bits else 1
        with m.If(wraps | end["group"]):    # the next group's activations start a new row
            sync += self.out_row.eq(self.out_row + 1)
        with m.If(~end["group"]):
            sync += self._advance("group") + [self.gaddr.eq(self.gaddr + cur["per"]),
                                              self.waddr.eq(self.gaddr + cur["per"])]
            at(self.pbase, self.pox, self.poy)
        with m.Else():
            sync += self._restart("group") + [self.gaddr.eq(self.lbase),
                                              self.waddr.eq(self.lbase),
                                              self.hidden.eq(self.hbase)]
            with m.If(~end["px"]):
                sync += self._advance("px") + [self.pbase.eq(self.pbase + cur["pixel_step"]),
                                               self.pox.eq(self.pox + cur["pool_last"] + 1)]
                at(self.pbase + cur["pixel_step"], self.pox + cur["pool_last"] + 1, self.poy)
            with m.Elif(~end["py"]):
                row = self.prow + cur["row_step"]
                y = self.poy + cur["pool_last"] + 1
                sync += self._restart("px") + self._advance("py") + [
                    self.prow.eq(row), self.pbase.eq(row), self.pox.eq(cur["pad"]),
                    self.poy.eq(y)]
                at(row, cur["pad"], y)
            with m.Else():                  # the layer's last row
                m.d.comb += self.layer_done.eq(1)
                sync += [self.waddr.eq(self.waddr + 1), self.out_row.eq(0)]
                with m.If(~self.final):
                    sync += self.hidden.eq(self.hidden + 1)

    def drive(self, cmd):
        """The command of the current row."""
        count, end, cur = self.count, self.end, self.cur
        plane = self.plane
        first = (count["chunk"] == 0) & (count["kx"] == 0) & (count["ky"] == 0) & (plane == 0)
        outside = ((self.iy < 0) | (self.iy >= cur["height"]) | (self.ix < 0)
                   | (self.ix >= cur["width"]))
        self.m.d.comb += [
            cmd.addr.eq(self.waddr), cmd.chunk.eq(self.arow[:len(cmd.chunk)]),
            cmd.zero.eq(outside),
            cmd.tag.layer.eq(self.layer), cmd.tag.group.eq(count["group"]),
            cmd.tag.hidden.eq(self.hidden), cmd.tag.first.eq(first),
            cmd.tag.last.eq(end["chunk"] & end["kx"] & end["ky"] & self.plane_end),
            cmd.tag.pool_first.eq((count["wx"] == 0) & (count["wy"] == 0)),
            cmd.tag.pool_last.eq(end["wx"] & end["wy"]),
            cmd.tag.end.eq(end["group"]), cmd.tag.plane.eq(plane),
            cmd.tag.row.eq(self.out_row),
        ]
