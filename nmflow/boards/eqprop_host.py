"""The host driver of the EP learning unit's board (protocol: :mod:`nmflow.protocol.eqprop`,
specified in docs/eqprop_protocol.md).

::

    with EqPropLink("/dev/ttyUSB1") as link:       # or the URL of a simulated board
        info = link.info()
        link.load(ef.init_params(config))
        prediction = link.train(x, label)
        prediction, states = link.infer(x)
        params = link.read()
        codes = link.read_codes()                  # binary units: the pair codes

Frames, error replies, corrupted replies and time-outs are handled by the shared
:class:`~nmflow.boards.transport.FramedTransport`; every failure is one-line
:class:`~nmflow.errors.NmflowError`.
"""

import numpy as np

from ..errors import NmflowError
from ..golden.eqprop_board import image_to_params, params_to_image
from ..golden.eqprop_layout import EqPropLayout
from ..protocol.eqprop import EQ_VERSION, EqCommand, EqReply, decode_info
from ..protocol.framing import BAUD, encode_words, signed_words
from .transport import LinkDriver

__all__ = ["EqPropLink"]


class EqPropLink(LinkDriver):
    """A connection to an :class:`~nmflow.rtl.eqprop_link.EqPropHostTop` (``port``: a pyserial
    name or URL; ``baudrate``; ``timeout``: seconds per reply; a TRAIN on a slow simulated board
    needs a generous one)."""

    def __init__(self, port, *, baudrate=BAUD, timeout=5.0):
        super().__init__(port, baudrate=baudrate, timeout=timeout)
        self._info = self._layout = None

    def info(self):
        """The board's :class:`~nmflow.protocol.eqprop.EqPropInfo` (asked once)."""
        if self._info is None:
            info = decode_info(self._ask(EqCommand.INFO, b""))
            if info.version != EQ_VERSION:
                raise NmflowError(f"board protocol version must be {EQ_VERSION}, not "
                                  f"{info.version} (port {self.port!r})")
            self._layout = EqPropLayout(info.sizes, info.lanes)
            self._info = info
        return self._info

    @property
    def layout(self):
        self.info()
        return self._layout

    # -- parameters ------------------------------------------------------------------------------

    def load(self, params):
        """Write ``{"W": [...], "b": [...]}`` (raw integers of the weight format) to the board,
        in frames of at most R rows (RB biases)."""
        info, lay = self.info(), self.layout
        for k, (w, b) in enumerate(zip(params["W"], params["b"])):
            want = (info.sizes[k + 1], info.sizes[k])
            if np.shape(w) != want or np.shape(b) != want[:1]:
                raise NmflowError(f"weights of layer {k} must have shape {want} and biases "
                                  f"{want[:1]}, not {np.shape(w)} and {np.shape(b)}")
        low, high = -(1 << (info.weight_bits - 1)), (1 << (info.weight_bits - 1)) - 1
        for value in [*params["W"], *params["b"]]:
            value = np.asarray(value)
            if value.size and (value.min() < low or value.max() > high):
                raise NmflowError(f"parameters must be raw {info.weight_bits}-bit integers "
                                  f"({low} to {high}), not {int(value.min() if value.min() < low else value.max())}")
        banks, biases = params_to_image(lay, params)
        wb = info.word_bytes
        rows = [[banks[b][a] for b in range(info.lanes)] for a in range(info.wdepth)]
        for first in range(0, info.wdepth, info.rows_per_frame):
            chunk = rows[first:first + info.rows_per_frame]
            self._ask(EqCommand.LOAD_W, first.to_bytes(2, "little")
                      + encode_words([w for row in chunk for w in row], wb))
        for first in range(0, info.bdepth, info.biases_per_frame):
            chunk = biases[first:first + info.biases_per_frame]
            self._ask(EqCommand.LOAD_B, first.to_bytes(2, "little") + encode_words(chunk, wb))

    def _read_banks(self, command):
        """Every row of the weight banks (READ_W) or the pair-code banks (READ_C), as banks."""
        info = self.info()
        L, wb = info.lanes, info.word_bytes
        banks = [[0] * info.wdepth for _ in range(L)]
        for first in range(0, info.wdepth, info.rows_per_frame):
            n = min(info.rows_per_frame, info.wdepth - first)
            words = self._read_words(command, first, n, n * L, wb, info.weight_bits)
            for row in range(n):
                for b in range(L):
                    banks[b][first + row] = words[row * L + b]
        return banks

    def read_codes(self):
        """The pair codes of a binary unit's weights, one int64 matrix per layer (``PLUS`` 2,
        ``MINUS`` 1; :mod:`nmflow.golden.pairs`). A unit of real weights refuses (BAD_COMMAND)."""
        lay = self.layout
        return image_to_params(lay, self._read_banks(EqCommand.READ_C),
                               [0] * self.info().bdepth)["W"]

    def read(self):
        """The board's parameters, ``{"W": [...], "b": [...]}`` (int64)."""
        info, lay = self.info(), self.layout
        wb = info.word_bytes
        banks = self._read_banks(EqCommand.READ_W)
        biases = []
        for first in range(0, info.bdepth, info.biases_per_frame):
            n = min(info.biases_per_frame, info.bdepth - first)
            biases += self._read_words(EqCommand.READ_B, first, n, n, wb, info.weight_bits)
        return image_to_params(lay, banks, biases)

    def seed(self, state):
        """Set the board's LFSR state (nonzero, 32 bits)."""
        if isinstance(state, bool) or not isinstance(state, (int, np.integer)) \
                or not 1 <= state < 2 ** 32:
            raise NmflowError(f"seed must be an integer from 1 to 2**32-1, not {state!r}")
        self._ask(EqCommand.SEED, int(state).to_bytes(4, "little"))

    # -- samples ---------------------------------------------------------------------------------

    def train(self, x, label):
        """One learning step on ``x`` (raw input states) with ``label``; the free phase's
        prediction."""
        info = self.info()
        x = self._inputs(x)
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) \
                or not 0 <= label < info.sizes[-1]:
            raise NmflowError(f"label must be an integer from 0 to {info.sizes[-1] - 1}, not "
                              f"{label!r}")
        reply = self._ask(EqCommand.TRAIN, bytes(x) + bytes([int(label)]))
        if len(reply) != 1:
            raise NmflowError(f"TRAIN reply payload must hold 1 byte, not {len(reply)}")
        return reply[0]

    def infer(self, x):
        """``(prediction, output states)`` of the free phase on ``x``."""
        info = self.info()
        reply = self._ask(EqCommand.INFER, bytes(self._inputs(x)))
        if len(reply) != 1 + info.sizes[-1]:
            raise NmflowError(f"INFER reply payload must hold {1 + info.sizes[-1]} bytes, not "
                              f"{len(reply)}")
        return reply[0], np.frombuffer(reply[1:], dtype=np.uint8).astype(np.int64)

    # -- internals -------------------------------------------------------------------------------

    def _inputs(self, x):
        info = self.info()
        x = np.asarray(x)
        if x.shape != (info.sizes[0],) or not np.issubdtype(x.dtype, np.integer):
            raise NmflowError(f"x must hold {info.sizes[0]} integers, not shape {list(x.shape)} "
                              f"of {x.dtype}")
        top = (1 << info.state_bits) - 1
        if x.size and (x.min() < 0 or x.max() > top):
            raise NmflowError(f"x must hold raw states 0 to {top}, not "
                              f"{int(x.min() if x.min() < 0 else x.max())}")
        return [int(v) for v in x]

    def _read_words(self, command, first, n, count, wb, bits):
        reply = self._ask(command, first.to_bytes(2, "little") + n.to_bytes(2, "little"))
        if len(reply) != count * wb:
            raise NmflowError(f"{command.name} reply payload must hold {count * wb} bytes, not "
                              f"{len(reply)}")
        return signed_words(reply, wb, count)

    def _ask(self, command, payload):
        return self._transport.request(command, payload, EqReply(command | 0x80))
