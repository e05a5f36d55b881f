"""One framed transport for every nmflow board: a serial port (or its ``socket://`` simulation)
carrying the frames of :mod:`nmflow.protocol.framing`, one request at a time.

:class:`FramedTransport` sends a request and reads its reply frame, checking the CRC, the reply
command and the deadline; :class:`LinkDriver` is what a board's driver is built on
(:class:`~nmflow.boards.host.EngineLink` for the engine, :class:`~nmflow.boards.eqprop_host.
EqPropLink` for the EqProp unit): it owns a transport and closes it, and nothing else, so no
driver carries a method its board cannot serve. Every failure (an error reply, a corrupted reply,
no reply in time, a port that fails) raises :class:`~nmflow.errors.NmflowError` with one line;
nothing blocks longer than the timeout.
"""

import time
import serial

from ..errors import NmflowError, check_number
from ..protocol.framing import (BAUD, ERROR_TEXT, SYNC, ErrorCode, decode_frame,
                               encode_frame)

__all__ = ["FramedTransport", "LinkDriver"]

#: Longest single wait on the port; reads loop until the request's deadline.
_POLL = 0.05
#: The reply command of an ERROR reply.
_ERROR = 0xFF


class FramedTransport:
    """Frames over a pyserial port.

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
    """

    def __init__(self, port, *, baudrate=BAUD, timeout=2.0):
        self.timeout = check_number("timeout", timeout, above=0, unit="seconds")
        self.port, self.baudrate = port, baudrate
        try:
            self._serial = serial.serial_for_url(port, baudrate=baudrate,
                                                 timeout=min(self.timeout, _POLL),
                                                 write_timeout=self.timeout)
        except (serial.SerialException, ValueError, OSError) as error:
            raise NmflowError(f"cannot open port {port!r}: {error}") from None

    def _baud_hint(self):
        # A serial line at another baud rate than the bitstream's reads as silence or garbage.
        if "://" in str(self.port):
            return ""
        return (f" at {self.baudrate} baud (the bitstream's must be the same: 'nmflow build "
                f"--baud', {BAUD} by default)")

    def close(self):
        """Close the port (idempotent)."""
        if self._serial.is_open:
            self._serial.close()

    def request(self, command, payload, reply):
        """Send ``command`` (an enum member: its name appears in errors) with ``payload`` and
        return the payload of its reply, whose command must be ``reply`` (or ERROR, which raises
        naming the error code)."""
        frame = encode_frame(command, payload)
        try:
            self._serial.reset_input_buffer()
            self._serial.write(frame)
            self._serial.flush()
            got, data = self._read_frame(time.monotonic() + self.timeout)
        except serial.SerialException as error:
            raise NmflowError(f"serial port {self.port!r} failed: {error}") from None
        if got == _ERROR:
            code = data[0] if len(data) == 1 else None
            try:
                text = f"{ErrorCode(code).name} ({ERROR_TEXT[ErrorCode(code)]})"
            except ValueError:
                text = f"unknown error code {data.hex()!r}"
            raise NmflowError(f"board replied with error {text} to {command.name}")
        if got != reply:
            raise NmflowError(f"reply command must be 0x{reply:02X} ({reply.name}), "
                              f"not 0x{got:02X}")
        return data

    def _read_frame(self, deadline):
        """Read one frame: skip to SYNC, read the header, the payload and the CRC; check it."""
        while True:
            head = self._read(1, deadline)
            if head[0] == SYNC:
                break
        head += self._read(3, deadline)
        length = int.from_bytes(head[2:4], "little")
        frame = head + self._read(length + 1, deadline)
        try:
            return decode_frame(frame)
        except NmflowError as error:
            raise NmflowError(f"corrupted reply from {self.port!r}: {error}"
                              f"{self._baud_hint()}") from None

    def _read(self, n, deadline):
        data = bytearray()
        while len(data) < n:
            if time.monotonic() >= deadline:
                raise NmflowError(f"no complete reply from {self.port!r} within "
                                  f"{self.timeout:g} s{self._baud_hint()}")
            data += self._serial.read(n - len(data))
        return bytes(data)


class LinkDriver:
    """A board's driver: a :class:`FramedTransport` it owns, closed with it (``with``).
    Arguments as :class:`FramedTransport`."""

    def __init__(self, port, *, baudrate=BAUD, timeout=2.0):
        self._transport = FramedTransport(port, baudrate=baudrate, timeout=timeout)

    @property
    def port(self):
        return self._transport.port

    def _baud_hint(self):
        # A serial line at another baud rate than the bitstream's reads as silence or garbage.
        if "://" in str(self.port):
            return ""
        return (f" at {self.baudrate} baud (the bitstream's must be the same: 'nmflow build "
                f"--baud', {BAUD} by default)")

    def close(self):
        """Close the port (idempotent)."""
        self._transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
