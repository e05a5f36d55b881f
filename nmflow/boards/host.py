"""The host driver: talk to an nmflow board (or its simulation) over a serial port.

::

    with EngineLink("/dev/ttyUSB1") as link:          # or "socket://127.0.0.1:PORT"
        print(link.info())
        cls, scores = link.infer([3, 0, 15, ...])
        link.set_errors(ErrorInjection(ErrorRates(0, 0.01, 0.065), seed=7))   # injector boards
        hidden = link.load(0, [1234, -56])             # metaplastic boards: hidden weights of
        hidden = link.update(0, [-8, 3])               # group 0 after the load / the update
        codes = link.read_rows()                       # the engine's pair-code memory
        weights = link.read_weights(model)             # ... read as ternary weights, per layer

The protocol is specified in :mod:`nmflow.protocol`, and frames are built and checked with it.
Every failure (bad inputs, an error reply, a corrupted reply, no reply in time) raises
:class:`~nmflow.errors.NmflowError` with one line; nothing blocks longer than the timeout.
"""

import time
from numbers import Real

import numpy as np
import serial

from .. import protocol
from ..errors import NmflowError
from ..golden.injector import ErrorInjection
from ..protocol import Command, ErrorCode, Reply

__all__ = ["EngineLink"]

#: Longest single wait on the port; reads loop until the request's deadline.
_POLL = 0.05


class EngineLink:
    """A connection to an inference engine behind a :class:`~nmflow.rtl.top.HostTop`.

    Parameters
    ----------
    port : str
        A pyserial port name or URL: ``/dev/ttyUSB1``, ``COM3``, ``socket://127.0.0.1:PORT``.
    baudrate : int
        Serial baud rate (ignored by ``socket://``).
    timeout : float
        Seconds to wait for a complete reply to one request.

    Raises
    ------
    NmflowError
        If the port cannot be opened or ``timeout`` is not a positive number.

    Notes
    -----
    One request at a time: each call sends one frame and reads its reply. The board is asked for
    its sizes (INFO) once, on the first call that needs them.
    """

    #: The protocol's request commands (a subclass speaking another protocol over the same
    #: framing names its own).
    commands = Command

    def __init__(self, port, *, baudrate=115200, timeout=2.0):
        if not isinstance(timeout, Real) or isinstance(timeout, bool) or not timeout > 0:
            raise NmflowError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self._port = port
        self._baudrate = baudrate
        self._timeout = float(timeout)
        self._info = None
        try:
            self._serial = serial.serial_for_url(port, baudrate=baudrate,
                                                 timeout=min(self._timeout, _POLL),
                                                 write_timeout=self._timeout)
        except (serial.SerialException, ValueError, OSError) as error:
            raise NmflowError(f"cannot open port {port!r}: {error}") from None

    # -- connection -------------------------------------------------------------------------------

    @property
    def port(self):
        return self._port

    def close(self):
        """Close the port (idempotent)."""
        if self._serial.is_open:
            self._serial.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- requests ---------------------------------------------------------------------------------

    def info(self):
        """The board's :class:`~nmflow.protocol.Info` (asked once, then cached).

        Raises
        ------
        NmflowError
            If the board does not answer, answers with an error or speaks another protocol version.
        """
        if self._info is None:
            payload = self._request(Command.INFO, b"", Reply.INFO)
            info = protocol.decode_info(payload)
            if info.version not in (protocol.VERSION, protocol.META_VERSION):
                raise NmflowError(f"board protocol version must be {protocol.VERSION} or "
                                  f"{protocol.META_VERSION}, not "
                                  f"{info.version} (port {self._port!r})")
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
            raise NmflowError(f"the board at {self._port} has no read-error injector: build it "
                              f"with --errors to set error rates at run time")
        if injection.rate_bits != info.rate_bits:
            raise NmflowError(f"the board's injector has rate_bits {info.rate_bits}, not "
                              f"{injection.rate_bits}: give --rate-bits {info.rate_bits}")
        t1, t12, t3 = injection.thresholds()
        config = protocol.ErrorsConfig(t1, t12 - t1, t3, injection.seed,
                                       protocol.MODES.index(injection.mode))
        payload = self._request(Command.ERRORS, protocol.encode_errors(config), Reply.ERRORS)
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
        return self._meta_request(Command.UPDATE, group, d, mask)

    def load(self, group, w, mask=None):
        """Write the hidden weights ``w`` (one raw ``w_format`` int per lane) of ``group`` (LOAD
        request), and with them the binary weights ``sign(w)`` (+1 at 0) the engine reads; return
        the group's hidden weights after the load. Arguments as :meth:`update`."""
        return self._meta_request(Command.LOAD, group, w, mask)

    def read_rows(self, row=0, count=None):
        """Read rows of the engine's weight memory as stored (READ requests): the pair codes
        the next inference reads, through the engine's own read port.

        Parameters
        ----------
        row : int
            First row (``0 .. rows - 1``; ``rows`` from :meth:`info`'s ``meta``).
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
            If the board has no metaplastic unit (protocol version 3), the rows are out of range
            (checked before anything is sent) or a request fails (see :meth:`info`).
        """
        meta = self._meta("READ")
        if not isinstance(row, (int, np.integer)) or not 0 <= row < meta.rows:
            raise NmflowError(f"row must be an integer from 0 to {meta.rows - 1}, not {row!r}")
        count = meta.rows - row if count is None else count
        if (not isinstance(count, (int, np.integer)) or count < 1
                or row + count > meta.rows):
            raise NmflowError(f"count must be an integer from 1 to rows - row = "
                              f"{meta.rows - row}, not {count!r}")
        per_second = self._baudrate / 10
        chunk = max(1, min(meta.max_read,
                           int(per_second * self._timeout / 4) // meta.row_bytes))
        out = []
        for start in range(int(row), int(row + count), chunk):
            n = min(chunk, int(row + count) - start)
            payload = self._request(Command.READ, protocol.encode_read(start, n),
                                    Reply.READ)
            out += protocol.decode_read_reply(payload, meta, n)
        return np.array(out, dtype=np.uint8).reshape(int(count), meta.engine_lanes)

    def read_weights(self, model):
        """The ternary weights the engine reads now, per layer (``[out, in]`` int8 arrays, the
        ideal PCSA read of :func:`~nmflow.golden.pairs.pcsa_read`), read back with
        :meth:`read_rows` and laid out by ``model``'s sizes (a
        :class:`~nmflow.golden.hwmodel.HardwareModel`: the model the board was built from).

        Raises
        ------
        NmflowError
            If ``model``'s memory map does not have the board's rows, or as :meth:`read_rows`.
        """
        from ..golden.pairs import MemoryMap, read_weights
        meta = self._meta("READ")
        sizes = (model.n_inputs,) + tuple(layer.n_out for layer in model.layers)
        mmap = MemoryMap(meta.engine_lanes, sizes)
        if mmap.rows != meta.rows:
            raise NmflowError(f"model does not match the board: layers "
                              f"{'-'.join(map(str, sizes))} at {meta.engine_lanes} lanes take "
                              f"{mmap.rows} rows, the board has {meta.rows}")
        return read_weights(self.read_rows(), mmap)

    # -- internals --------------------------------------------------------------------------------

    def _meta(self, what):
        meta = self.info().meta
        if meta is None:
            raise NmflowError(f"the board at {self._port} has no metaplastic unit: build it with "
                              f"--metaplastic to send {what}")
        return meta

    def _check(self, values, *, batch):
        info = self.info()
        name = "array" if batch else "values"
        x = np.asarray(values)
        shape = f"[N, {info.n_inputs}]" if batch else f"[{info.n_inputs}]"
        if x.ndim != (2 if batch else 1) or x.shape[-1] != info.n_inputs:
            raise NmflowError(f"{name} must have shape {shape} (n_inputs = {info.n_inputs}), not "
                              f"{list(x.shape)}")
        if not np.issubdtype(x.dtype, np.integer):
            raise NmflowError(f"{name} must hold integers, not {x.dtype}")
        top = (1 << info.input_bits) - 1
        bad = (x < 0) | (x > top)
        if bad.any():
            raise NmflowError(f"{name} must hold unsigned {info.input_bits}-bit integers (0 to "
                              f"{top}), not {int(x[bad][0])}")
        return x.astype(np.int64).reshape(-1, info.n_inputs)

    def _meta_request(self, command, group, values, mask):
        meta = self._meta(command.name)
        name, bits = ("w", meta.w_bits) if command == Command.LOAD else ("d", meta.u_bits)
        if not isinstance(group, (int, np.integer)) or not 0 <= group < meta.groups:
            raise NmflowError(f"group must be an integer from 0 to {meta.groups - 1}, not "
                              f"{group!r}")
        full = (1 << meta.lanes) - 1
        mask = full if mask is None else mask
        if not isinstance(mask, (int, np.integer)) or not 0 <= mask <= full:
            raise NmflowError(f"mask must be an integer from 0 to {full} ({meta.lanes} lanes), "
                              f"not {mask!r}")
        x = np.asarray(values)
        if x.shape != (meta.lanes,) or not np.issubdtype(x.dtype, np.integer):
            raise NmflowError(f"{name} must hold {meta.lanes} integers (one per lane), not "
                              f"{x.dtype} of shape {list(x.shape)}")
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        bad = (x < low) | (x > high)
        if bad.any():
            raise NmflowError(f"{name} must hold signed {bits}-bit integers ({low} to {high}), "
                              f"not {int(x[bad][0])}")
        n = meta.w_bytes if command == Command.LOAD else meta.u_bytes
        payload = protocol.encode_meta(int(group), int(mask), x.tolist(), n)
        reply = Reply.LOAD if command == Command.LOAD else Reply.UPDATE
        return protocol.decode_meta_reply(self._request(command, payload, reply), meta)

    def _infer_one(self, row):
        info = self.info()
        payload = self._request(Command.INFER, bytes(int(v) for v in row), Reply.INFER)
        cls, scores = protocol.decode_result(payload, info.n_classes, info.score_bytes)
        if cls >= info.n_classes:
            raise NmflowError(f"reply class must be below n_classes = {info.n_classes}, not {cls}")
        return cls, np.array(scores, dtype=np.int64)

    def _request(self, command, payload, reply):
        frame = protocol.encode_frame(command, payload)
        try:
            self._serial.reset_input_buffer()
            self._serial.write(frame)
            self._serial.flush()
            got, data = self._read_frame(time.monotonic() + self._timeout)
        except serial.SerialException as error:
            raise NmflowError(f"serial port {self._port!r} failed: {error}") from None
        if got == Reply.ERROR:
            code = data[0] if len(data) == 1 else None
            try:
                text = f"{ErrorCode(code).name} ({protocol.ERROR_TEXT[ErrorCode(code)]})"
            except ValueError:
                text = f"unknown error code {data.hex()!r}"
            raise NmflowError(f"board replied with error {text} to "
                              f"{self.commands(command).name}")
        if got != reply:
            raise NmflowError(f"reply command must be 0x{reply:02X} ({reply.name}), "
                              f"not 0x{got:02X}")
        return data

    def _read_frame(self, deadline):
        """Read one frame: skip to SYNC, read the header, the payload and the CRC; check it."""
        while True:
            head = self._read(1, deadline)
            if head[0] == protocol.SYNC:
                break
        head += self._read(3, deadline)
        length = int.from_bytes(head[2:4], "little")
        frame = head + self._read(length + 1, deadline)
        try:
            return protocol.decode_frame(frame)
        except NmflowError as error:
            raise NmflowError(f"corrupted reply from {self._port!r}: {error}") from None

    def _read(self, n, deadline):
        data = bytearray()
        while len(data) < n:
            if time.monotonic() >= deadline:
                raise NmflowError(f"no complete reply from {self._port!r} within "
                                  f"{self._timeout:g} s")
            data += self._serial.read(n - len(data))
        return bytes(data)
