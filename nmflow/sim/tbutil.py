"""What every cocotb testbench of nmflow starts with."""

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

__all__ = ["PERIOD_NS", "start"]

#: Clock period of every testbench, in ns.
PERIOD_NS = 10


async def start(dut, **idle):
    """Start the clock, hold reset for three cycles with the given inputs at their idle values
    (``i__valid=0``, ...), and release it at a falling edge, where the testbenches drive.

    The clock runs in the simulator interface (``impl="gpi"``), not in a Python coroutine: that
    halves the Python work per cycle (the engine testbench runs about 1.4x faster). Only the
    clock uses the simulator's own writes; the testbenches' writes stay scheduled by cocotb.
    """
    Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start()
    for name, value in idle.items():
        getattr(dut, name).value = value
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
