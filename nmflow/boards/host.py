"""The host driver: talk to an nmflow board (or its simulation) over a serial port.

::

    with EngineLink("/dev/ttyUSB1") as link:          # or "socket://127.0.0.1:PORT"
        print(link.info())
        cls, scores = link.infer([3, 0, 15, ...])
        classes, scores, cycles = link.infer_batches(x)   # boards with a batch memory: run on
                                                       # the board back to back, timed there
        link.set_errors(ErrorInjection(ErrorRates(0, 0.01, 0.065), seed=7))   # injector boards
        hidden = link.load(0, [1234, -56])             # metaplastic boards: hidden weights of
        hidden = link.update(0, [-8, 3])               # group 0 after the load / the update
        codes = link.read_rows()                       # the engine's pair-code memory
        weights = link.read_weights(model)             # ... read as ternary weights, per layer

The protocol is specified in docs/contracts.md, section 5 (:mod:`nmflow.protocol.engine` and
:mod:`nmflow.protocol.metaplastic`); frames travel through a
:class:`~nmflow.boards.transport.FramedTransport`. Every failure (bad inputs, an error reply, a
corrupted reply, no reply in time) raises :class:`~nmflow.errors.NmflowError` with one line;
nothing blocks longer than the timeout.
"""

import numpy as np

from .. import protocol
from ..errors import NmflowError
from ..golden.injector import ErrorInjection
from ..golden.reference import check_values
from ..protocol import Command, MetaplasticCommand, Reply
from ..protocol.framing import BAUD
from .transport import LinkDriver

__all__ = ["EngineLink"]


class EngineLink(LinkDriver):
    """A connection to an inference engine behind a :class:`~nmflow.rtl.top.HostTop`: ``port``
    (a pyserial port name or URL: ``/dev/ttyUSB1``, ``COM3``, ``socket://127.0.0.1:PORT``),
    ``baudrate`` and ``timeout`` (seconds per reply) as :class:`~nmflow.boards.transport.
    FramedTransport`, which raises :class:`~nmflow.errors.NmflowError` if the port cannot be
    opened.

    Notes
    -----
    One request at a time: each call sends one frame and reads its reply. The board is asked for
    its sizes (INFO) once, on the first call that needs them.
    """

    def __init__(self, port, *, baudrate=BAUD, timeout=2.0):
        super().__init__(port, baudrate=baudrate, timeout=timeout)
        self._info = None

    # -- requests ---------------------------------------------------------------------------------

    def info(self):
        """The board's :class:`~nmflow.protocol.Info` (asked once, then cached).

        Raises
        ------
        NmflowError
            If the board does not answer, answers with an error or speaks another protocol version.
        """
        if self._info is None:
            payload = self._transport.request(Command.INFO, b"", Reply.INFO)
            info = protocol.decode_info(payload)
            versions = (protocol.VERSION, protocol.METAPLASTIC_VERSION,
                        protocol.WEIGHTS_VERSION, protocol.BATCH_VERSION)
            if info.version not in versions:
                raise NmflowError(f"board protocol version must be one of "
                                  f"{', '.join(map(str, versions))}, not {info.version} "
                                  f"(port {self.port!r})")
            self._info = info
        return self._info

    def infer(self, values):
        """Run one inference.

        Parameters
        ----------
        values : sequence of int
            ``n_inputs`` unsigned integers below ``2 ** input_bits``.

        Returns
        -------
        (int, numpy.ndarray)
            The class (argmax, lowest index on ties) and every score as int64 ``[n_classes]``.

        Raises
        ------
        NmflowError
            If ``values`` has the wrong length or type or a value out of range (checked before
            anything is sent), or the request fails (see :meth:`info`).
        """
        x = self._check(values, batch=False)
        return self._infer_one(x[0])

    def infer_many(self, array):
        """Run one inference per row of ``array`` ([N, n_inputs]); every row is checked first.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            Classes int64 ``[N]`` and scores int64 ``[N, n_classes]``.
        """
        x = self._check(array, batch=True)
        info = self.info()
        classes = np.zeros(len(x), dtype=np.int64)
        scores = np.zeros((len(x), info.n_classes), dtype=np.int64)
        for n, row in enumerate(x):
            classes[n], scores[n] = self._infer_one(row)
        return classes, scores

    def infer_batches(self, array, *, progress=None):
        """Run every row of ``array`` ([N, n_inputs]; every row checked first) on a board with a
        batch memory: BATCH requests of up to its capacity, each run back to back on the board
        and timed by its cycle counter. ``progress(rows_done, N)`` after each request.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray, list of int)
            Classes int64 ``[N]``, scores int64 ``[N, n_classes]``, and the cycles each request
            took on the board (from its first input value to its last result beat; the board's
            clock is ``info().batch.clock_hz``).

        Raises
        ------
        NmflowError
            If the board has no batch memory, a row is out of range, or a request fails (see
            :meth:`info`).
        """
        x = self._check(array, batch=True)
        info = self.info()
        if info.batch is None:
            raise NmflowError(f"the board at {self.port} has no batch memory: build it with "
                              f"--batch to run batches on the board")
        capacity = info.batch.capacity
        classes = np.zeros(len(x), dtype=np.int64)
        scores = np.zeros((len(x), info.n_classes), dtype=np.int64)
        cycles = []
        for start in range(0, len(x), capacity):
            rows = x[start:start + capacity]
            payload = self._transport.request(Command.BATCH, rows.astype(np.uint8).tobytes(),
                                              Reply.BATCH)
            count, results = protocol.decode_batch(payload, info.n_classes, info.score_bytes)
            if len(results) != len(rows):
                raise NmflowError(f"BATCH reply must hold {len(rows)} results, not "
                                  f"{len(results)}")
            for n, (cls, row_scores) in enumerate(results, start):
                if cls >= info.n_classes:
                    raise NmflowError(f"reply class must be below n_classes = "
                                      f"{info.n_classes}, not {cls}")
                classes[n], scores[n] = cls, row_scores
            cycles.append(count)
            if progress is not None:
                progress(start + len(rows), len(x))
        return classes, scores, cycles

    def set_errors(self, injection):
        """Set the board's read-error injector (ERRORS request): rates, seed and mode of an
        :class:`~nmflow.golden.injector.ErrorInjection`; its sources restart from the seed, so the
        next inferences match a fresh :class:`~nmflow.golden.injector.InjectedRead` of it.

        Raises
        ------
        NmflowError
            If the board has no injector, its ``rate_bits`` differ from the injection's, or the
            board refuses the configuration (see :meth:`info`).
        """
        if not isinstance(injection, ErrorInjection):
            raise NmflowError(f"injection must be an ErrorInjection, not "
                              f"{type(injection).__name__}")
        info = self.info()
        if not info.rate_bits:
            raise NmflowError(f"the board at {self.port} has no read-error injector: build it "
                              f"with --errors to set error rates at run time")
        if injection.rate_bits != info.rate_bits:
            raise NmflowError(f"the board's injector has rate_bits {info.rate_bits}, not "
                              f"{injection.rate_bits}: give --rate-bits {info.rate_bits}")
        t1, t12, t3 = injection.thresholds()
        config = protocol.ErrorsConfig(t1, t12 - t1, t3, injection.seed,
                                       protocol.MODES.index(injection.mode))
        payload = self._transport.request(Command.ERRORS, protocol.encode_errors(config),
                                          Reply.ERRORS)
        if payload:
            raise NmflowError(f"ERRORS reply payload must be empty, not {len(payload)} bytes")

    def update(self, group, d, mask=None):
        """Apply one metaplastic update to ``group`` (UPDATE request) and return the group's
        hidden weights after it; ``d = 0`` in every lane reads them back unchanged.

        Parameters
        ----------
        group : int
            The group (``0 .. groups - 1``, see :func:`~nmflow.rtl.metaplastic.group_of`).
        d : sequence of int
            One raw ``u_format`` update per lane.
        mask : int or None
            Bit ``p`` enables lane ``p`` (a disabled lane is neither updated nor written);
            ``None`` enables every lane.

        Returns
        -------
        list of int
            The ``lanes`` hidden weights (raw ``w_format``) after the update.

        Raises
        ------
        NmflowError
            If the board has no metaplastic unit, an argument is out of range (checked before
            anything is sent) or the request fails (see :meth:`info`).
        """
        return self._group_request(MetaplasticCommand.UPDATE, group, d, mask)

    def load(self, group, w, mask=None):
        """Write the hidden weights ``w`` (one raw ``w_format`` int per lane) of ``group`` (LOAD
        request), and with them the binary weights ``sign(w)`` (+1 at 0) the engine reads; return
        the group's hidden weights after the load. Arguments as :meth:`update`."""
        return self._group_request(MetaplasticCommand.LOAD, group, w, mask)

    def read_rows(self, row=0, count=None):
        """Read rows of the engine's weight memory as stored (READ requests): the pair codes
        the next inference reads, through the engine's own read port.

        Parameters
        ----------
        row : int
            First row (``0 .. rows - 1``; ``rows`` from :meth:`info`'s ``metaplastic``).
        count : int or None
            Rows to read; ``None`` reads to the last row. Long reads are split into requests
            whose replies take at most a quarter of the timeout on the line.

        Returns
        -------
        uint8 array [count, engine_lanes]
            Pair codes (:mod:`nmflow.golden.pairs`: ``0b10`` +1, ``0b01`` -1, ``0b00`` 0).

        Raises
        ------
        NmflowError
            If the board has no metaplastic unit (protocol version 4), the rows are out of range
            (checked before anything is sent) or a request fails (see :meth:`info`).
        """
        unit = self._metaplastic("READ")
        if not isinstance(row, (int, np.integer)) or not 0 <= row < unit.rows:
            raise NmflowError(f"row must be an integer from 0 to {unit.rows - 1}, not {row!r}")
        count = unit.rows - row if count is None else count
        if (not isinstance(count, (int, np.integer)) or count < 1
                or row + count > unit.rows):
            raise NmflowError(f"count must be an integer from 1 to rows - row = "
                              f"{unit.rows - row}, not {count!r}")
        transport = self._transport
        per_second = transport.baudrate / 10
        chunk = max(1, min(unit.max_read,
                           int(per_second * transport.timeout / 4) // unit.row_bytes))
        out = []
        for start in range(int(row), int(row + count), chunk):
            n = min(chunk, int(row + count) - start)
            payload = transport.request(MetaplasticCommand.READ, protocol.encode_read(start, n),
                                        protocol.MetaplasticReply.READ)
            out += protocol.decode_read_reply(payload, unit, n)
        return np.array(out, dtype=np.uint8).reshape(int(count), unit.engine_lanes)

    def write_weights(self, model, *, progress=None):
        """Write the weight memory of a board whose weights are loaded at run time (INFO
        version 5, SPRAM): every row of ``model``'s memory image (a
        :class:`~nmflow.golden.hwmodel.HardwareModel` laid out over the board's lanes and pe, as
        INFO tells), one WEIGHTS request per row. ``progress(rows_done, rows)`` now and then.

        Returns
        -------
        int
            The rows written.

        Raises
        ------
        NmflowError
            If the board's weights come with its bitstream, its rows are not the model's at its
            lanes and pe, or a request fails (see :meth:`info`).
        """
        from ..golden.plan import EnginePlan
        tail = self.info().weights
        if tail is None:
            raise NmflowError(f"the board at {self.port} holds its weights in its bitstream: "
                              f"nothing to write")
        lanes, pe = tail.lanes, tail.pe
        plan = EnginePlan(model, lanes, pe=pe)
        if plan.weight_rows != tail.rows:
            raise NmflowError(f"model does not match the board: layers "
                              f"{'-'.join(map(str, model.sizes))} at {lanes} lanes and pe {pe} "
                              f"take {plan.weight_rows} rows, the board has {tail.rows}")
        codes = plan.memory_codes()
        transport = self._transport
        for row, lane_codes in enumerate(codes):
            payload = transport.request(Command.WEIGHTS, int(row).to_bytes(2, "little")
                                        + protocol.encode_weight_row(lanes, lane_codes),
                                        Reply.WEIGHTS)
            if payload:
                raise NmflowError(f"WEIGHTS reply payload must be empty, not {len(payload)} "
                                  f"bytes")
            if progress is not None and (row % 256 == 255 or row == len(codes) - 1):
                progress(row + 1, len(codes))
        return len(codes)

    def read_weights(self, model):
        """The ternary weights the engine reads now, per layer (``[out, in]`` int8 arrays, the
        ideal PCSA read of :func:`~nmflow.golden.pairs.pcsa_read`), read back with
        :meth:`read_rows` and laid out by ``model``'s memory map (a
        :class:`~nmflow.golden.hwmodel.HardwareModel`: the model the board was built from).

        Raises
        ------
        NmflowError
            If ``model``'s memory map does not have the board's rows, or as :meth:`read_rows`.
        """
        from ..golden.pairs import MemoryMap, read_weights
        unit = self._metaplastic("READ")
        sizes = (model.n_inputs,) + tuple(layer.n_out for layer in model.layers)
        mmap = MemoryMap.for_model(model, unit.engine_lanes, unit.engine_pe)
        if mmap.rows != unit.rows:
            raise NmflowError(f"model does not match the board: layers "
                              f"{'-'.join(map(str, sizes))} at {unit.engine_lanes} lanes and pe "
                              f"{unit.engine_pe} take "
                              f"{mmap.rows} rows, the board has {unit.rows}")
        return read_weights(self.read_rows(), mmap)

    # -- internals --------------------------------------------------------------------------------

    def _metaplastic(self, what):
        unit = self.info().metaplastic
        if unit is None:
            raise NmflowError(f"the board at {self.port} has no metaplastic unit: build it with "
                              f"--metaplastic to send {what}")
        return unit

    def _check(self, values, *, batch):
        info = self.info()
        return check_values(values, info.n_inputs, info.input_bits,
                            name="array" if batch else "values", batch=batch)

    def _group_request(self, command, group, values, mask):
        unit = self._metaplastic(command.name)
        load = command == MetaplasticCommand.LOAD
        name, bits = ("w", unit.w_bits) if load else ("d", unit.u_bits)
        if not isinstance(group, (int, np.integer)) or not 0 <= group < unit.groups:
            raise NmflowError(f"group must be an integer from 0 to {unit.groups - 1}, not "
                              f"{group!r}")
        full = (1 << unit.lanes) - 1
        mask = full if mask is None else mask
        if not isinstance(mask, (int, np.integer)) or not 0 <= mask <= full:
            raise NmflowError(f"mask must be an integer from 0 to {full} ({unit.lanes} lanes), "
                              f"not {mask!r}")
        x = np.asarray(values)
        if x.shape != (unit.lanes,) or not np.issubdtype(x.dtype, np.integer):
            raise NmflowError(f"{name} must hold {unit.lanes} integers (one per lane), not "
                              f"{x.dtype} of shape {list(x.shape)}")
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        bad = (x < low) | (x > high)
        if bad.any():
            raise NmflowError(f"{name} must hold signed {bits}-bit integers ({low} to {high}), "
                              f"not {int(x[bad][0])}")
        payload = protocol.encode_group(int(group), int(mask), x.tolist(),
                                        unit.w_bytes if load else unit.u_bytes)
        reply = protocol.MetaplasticReply(command | 0x80)
        return protocol.decode_group_reply(self._transport.request(command, payload, reply), unit)

    def _infer_one(self, row):
        info = self.info()
        payload = self._transport.request(Command.INFER, bytes(int(v) for v in row), Reply.INFER)
        cls, scores = protocol.decode_result(payload, info.n_classes, info.score_bytes)
        if cls >= info.n_classes:
            raise NmflowError(f"reply class must be below n_classes = {info.n_classes}, not {cls}")
        return cls, np.array(scores, dtype=np.int64)
