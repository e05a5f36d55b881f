"""What every cocotb testbench of nmflow starts with."""

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

__all__ = ["PERIOD_NS", "start"]

#: Clock period of every testbench, in ns.
PERIOD_NS = 10


async def start(dut, **idle):
    """Start the clock, hold reset for three cycles with the given inputs at their idle values
    (``i__valid=0``, ...), and release it at a falling edge, where the testbenches drive."""
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    for name, value in idle.items():
        getattr(dut, name).value = value
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
