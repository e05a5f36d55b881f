"""The loopback TCP port a simulated board is served on (``socket://127.0.0.1:PORT``, what
pySerial's ``serial_for_url`` opens): one listening socket, one connection at a time, the bytes
a host sends handed on as they arrive. Shared by the Amaranth-simulated board
(:class:`~nmflow.sim.uart_bridge.SimulatedBoard`) and the Verilator-compiled one
(:class:`~nmflow.sim.verilated_board.VerilatedBoard`)."""

import socket

__all__ = ["POLL_SECONDS", "listen", "serve_connections"]

#: How often a blocked ``accept`` or ``recv`` looks at the stop event.
POLL_SECONDS = 0.05


def listen():
    """A listening socket on a free loopback port (one pending connection, polled) and its URL."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(POLL_SECONDS)
    return server, f"socket://127.0.0.1:{server.getsockname()[1]}"


def serve_connections(server, stop, *, attach, deliver, detach):
    """Accept connections on ``server`` one after another until the event ``stop`` is set.

    ``attach(conn)`` is called when one opens, ``deliver(data)`` with each chunk of bytes it
    sends, ``detach()`` when it ends (closed by the host, an error, or ``stop``), which must
    close it. An ``OSError`` of the listening socket itself is raised to the caller."""
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except socket.timeout:
            continue
        conn.settimeout(POLL_SECONDS)
        attach(conn)
        try:
            while not stop.is_set():
                try:
                    data = conn.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not data:
                    break
                deliver(data)
        finally:
            detach()
