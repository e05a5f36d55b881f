"""The ULX3S-85F board top: a platform-free design with a UART, on the LFE5U-85F.

The ULX3S (Radiona) carries a Lattice ECP5 LFE5U-85F-6BG381C (83,640 LUT4s, 208 block RAMs of
18 kbit, 156 multipliers of 18x18 bits), a 25 MHz oscillator and an FTDI FT231X as a UART to the
host (pins M1 = FPGA receives, L4 = FPGA transmits).

``uart_tx_enable`` (pin L3) is left alone: the board's reference constraints
(``ulx3s_v20.lpf``) mark it *FPGA receives*, it is the FT231X's TXDEN output and the UART works
without it, so driving it would only risk fighting the FTDI. The UART's ``rts`` and ``dtr``
lines (used by the board's programming logic) are requested with the resource but stay unused.
"""

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .icebreaker import BoardTop
from .report import BoardInfo

__all__ = ["ULX3STop", "INFO"]


class ULX3STop(BoardTop):
    """The ULX3S top: the core's ``rx``/``tx`` on the FT231X UART (pins M1 and L4).

    See :class:`~nmflow.boards.icebreaker.BoardTop` for the parameters.
    """


#: Facts about the ULX3S-85F used for budget checks and builds.
INFO = BoardInfo(
    name="ulx3s",
    title="ULX3S-85F",
    family="ecp5",
    device="LFE5U-85F",
    platform=ULX3S_85F_Platform,
    top=ULX3STop,
    clock_hz=25_000_000,
    logic_cells=83640,
    logic_cell_type="TRELLIS_COMB",
    block_rams=208,
    block_ram_bits=18432,
    block_ram_type="DP16KD",
    dsps=156,
    dsp_type="MULT18X18D",
    target_mhz=130.0,
    bitstream_suffix=".bit",
    # synth_ecp5 infers MULT18X18D by default; nothing to add.
    synth_opts=(),
)
