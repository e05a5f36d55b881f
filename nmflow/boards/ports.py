"""Finding a board's UART among the serial ports: ``--port auto``.

Each board description names the USB bridge its UART is on (:attr:`Board.uart_usb`: FTDI vendor
and product IDs and the interface of the UART): the iCEBreaker's FT2232H gives two ports, and the
UART is its second interface (B); the ULX3S's FT231X has one. :func:`find_port` matches them
against pyserial's port list (``serial.tools.list_ports.comports()``), and refuses with one line
that lists what it found when no port or more than one matches.
"""

from ..errors import NmflowError
from .catalog import BOARDS, get_board

__all__ = ["find_port", "resolve_port", "port_interface"]


def port_interface(port):
    """The USB interface number of a pyserial port (``ListPortInfo``), from its ``location``
    (``"1-1.2:1.1"``: configuration 1, interface 1), or ``None`` if it does not say."""
    location = getattr(port, "location", None) or ""
    _, colon, tail = location.rpartition(":")
    if not colon:
        return None
    try:
        return int(tail.rpartition(".")[2])
    except ValueError:
        return None


def _describe(port):
    ids = (f"{port.vid:04x}:{port.pid:04x}" if getattr(port, "vid", None) is not None
           and getattr(port, "pid", None) is not None else "no USB ids")
    interface = port_interface(port)
    where = f", interface {interface}" if interface is not None else ""
    return f"{port.device} ({ids}{where})"


def _matches(board, port):
    vid, pid, interface = board.uart_usb
    if getattr(port, "vid", None) != vid or getattr(port, "pid", None) != pid:
        return False
    found = port_interface(port)
    return found is None or found == interface


def find_port(board=None, ports=None):
    """The device of the one serial port that is a board's UART: of ``board`` (a name or a
    :class:`~nmflow.boards.board.Board`), or of any board nmflow knows when ``None``. ``ports``
    are pyserial ``ListPortInfo``-like objects (default: the machine's). Raises
    :class:`NmflowError` listing the ports found when none or more than one matches."""
    boards = list(BOARDS.values()) if board is None else [get_board(board)]
    if ports is None:
        from serial.tools import list_ports
        ports = list_ports.comports()
    ports = sorted(ports, key=lambda port: port.device)
    matching = [(port, b) for port in ports for b in boards if _matches(b, port)]
    names = " or ".join(b.title for b in boards)
    if len(matching) == 1:
        return matching[0][0].device
    seen = ", ".join(_describe(port) for port in ports) or "none"
    if not matching:
        raise NmflowError(f"--port auto found no {names} UART among the serial ports (found: "
                          f"{seen}): plug the board in, or give --port /dev/ttyUSB1")
    found = ", ".join(f"{port.device} ({b.title})" for port, b in matching)
    raise NmflowError(f"--port auto found {len(matching)} board UARTs ({found}): give --port "
                      f"with one of them")


def resolve_port(port, board=None, ports=None):
    """``port``, or, if it is ``"auto"``, the one board UART :func:`find_port` finds."""
    if isinstance(port, str) and port.strip().lower() == "auto":
        return find_port(board, ports)
    return port
