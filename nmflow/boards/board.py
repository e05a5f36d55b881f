"""What nmflow knows about a board: one :class:`Board` description per board.

Everything a budget check, a build, a report or a benchmark needs about a board lives in its one
description (:data:`nmflow.boards.icebreaker.BOARD`, :data:`nmflow.boards.ulx3s.BOARD`, gathered by
name in :data:`nmflow.boards.catalog.BOARDS`): the FPGA and its resources, the block RAM modes
and port width, the tools a build runs, the synthesis options, the platform and top classes, the
timing target and the bitstream suffix. The device, the package and the clock are not restated:
they are read from the amaranth-boards platform class.
"""

import operator
from dataclasses import dataclass
from functools import cached_property

from ..errors import NmflowError

__all__ = ["Board"]


def _count(name, value):
    """``value`` as an int if it is a positive integer (NumPy's included), else NmflowError."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < 1:
        raise NmflowError(f"{name} must be a positive integer, not {value!r}")
    return number


@dataclass(frozen=True)
class Board:
    """One board: its FPGA, its resources and how nmflow builds for it.

    Members
    -------
    name : str
        Registry key and directory name, e.g. ``"icebreaker"``.
    title : str
        Human name, e.g. ``"iCEBreaker"``.
    family : str
        FPGA family as nextpnr names it, ``"ice40"`` or ``"ecp5"``.
    platform : type
        The amaranth-boards platform class; :attr:`device`, :attr:`package` and :attr:`clock_hz`
        come from it.
    top : type
        The board top class (a :class:`~nmflow.boards.top.BoardTop`).
    logic_cells : int
        Logic cells (iCE40: LUT4 + flip-flop cells) or LUT4s (ECP5) of the device.
    logic_cell_type : str
        The nextpnr cell type counting them (``ICESTORM_LC``, ``TRELLIS_COMB``).
    block_rams, block_ram_bits : int
        Number of block RAMs and the data bits of each (4096 on iCE40, 18432 on ECP5).
    block_ram_type : str
        The nextpnr cell type counting them (``ICESTORM_RAM``, ``DP16KD``).
    block_ram_modes : tuple of (int, int)
        The ``(depth, width)`` shapes one block RAM takes with one read and one write port, as
        Yosys maps them (``SB_RAM40_4K``; ``DP16KD``, whose 36-bit mode needs both ports to read).
    block_ram_port_bits : int
        The widest read of one block RAM in one cycle, in bits (using both ports on ECP5).
    dsps : int
        Multiplier blocks (iCE40 ``SB_MAC16``, ECP5 ``MULT18X18D``).
    sprams : int
        Single-port 16K x 16 RAMs (the iCE40UP5K's ``SB_SPRAM256KA``; 0 elsewhere): where an
        engine whose weights do not fit the block RAMs keeps them (``memory="spram"``).
    dsp_type : str
        The nextpnr cell type counting them (``ICESTORM_DSP``, ``MULT18X18D``).
    tools : tuple of str
        The Amaranth tool names a bitstream build runs (keys of :data:`nmflow.toolchain.TOOLS`).
    target_mhz : float
        Default nextpnr target frequency: above the board clock, so that nextpnr optimises for
        speed and reports what the design could reach.
    bitstream_suffix : str
        ``".bin"`` (iCE40) or ``".bit"`` (ECP5).
    synth_opts : tuple of str
        Options added to Yosys' ``synth_<family>`` command.
    nextpnr_opts : tuple of str
        Options every nextpnr run of the board gets (before a build's own).
    uart_usb : tuple of (int, int, int)
        The USB bridge of the board's UART: vendor ID, product ID and the interface that is the
        UART (``--port auto`` finds it among the serial ports).
    loader_board : str
        The board's name for openFPGALoader (``nmflow program``).
    loads_sram : bool
        Whether the FPGA takes a bitstream into its SRAM as the board comes; if not (the
        iCEBreaker: its FPGA boots from the flash, SRAM loading needs its jumpers re-set),
        ``nmflow program`` writes the flash.
    run_clocks_mhz : dict, optional
        The PLL run clock a build tries first (``clock_mhz="auto"``), per unit a design holds
        (``engine``, ``injector``, ``metaplastic``, ``eqprop``): what the unit meets with the
        margin on this part, as measured; a design starts at the lowest of its units', and a
        build lowers that to what the design meets. The oscillator for a unit not listed.
    engine_folding : tuple of (int, int, int or None)
        The engine's ``(lanes, pe, first_layer_bits)`` that ran the default digits TNN fastest
        on this part and fit it, as measured (what ``nmflow bench`` builds when not told
        otherwise).
    folding_clocks_mhz : dict, optional
        ``{(lanes, pe, first_layer_bits): MHz}``: the run clock an engine of that folding met on
        this part, as measured; a build of the engine alone at that folding tries it first
        instead of ``run_clocks_mhz["engine"]`` (a wide engine meets less than a narrow one, and
        each place and route of it is long).

    Raises
    ------
    ValueError
        If a block RAM mode holds more bits than a block RAM, or is wider than its port.
    """
    name: str
    title: str
    family: str
    platform: type
    top: type
    logic_cells: int
    logic_cell_type: str
    block_rams: int
    block_ram_bits: int
    block_ram_type: str
    block_ram_modes: tuple
    block_ram_port_bits: int
    dsps: int
    dsp_type: str
    tools: tuple
    target_mhz: float
    bitstream_suffix: str
    synth_opts: tuple = ()
    nextpnr_opts: tuple = ()
    uart_usb: tuple = (0x0403, 0x6010, 1)
    loader_board: str = ""
    loads_sram: bool = True
    run_clocks_mhz: dict = None
    engine_folding: tuple = (16, 1, None)
    folding_clocks_mhz: dict = None
    sprams: int = 0

    def __post_init__(self):
        for depth, width in self.block_ram_modes:
            if depth * width > self.block_ram_bits or width > self.block_ram_port_bits:
                raise NmflowError(f"block_ram_modes must fit a block RAM of {self.block_ram_bits} "
                                 f"bits read {self.block_ram_port_bits} bits at a time, not "
                                 f"({depth}, {width})")

    def first_clock_mhz(self, *units, folding=None):
        """The run clock a design of ``units`` tries first: the lowest of theirs (the engine's if
        none is named), the oscillator for a unit :attr:`run_clocks_mhz` does not list; for the
        engine, the clock measured for its ``folding`` ``(lanes, pe, first_layer_bits)`` if
        :attr:`folding_clocks_mhz` has it."""
        clocks = dict(self.run_clocks_mhz or {})
        measured = (self.folding_clocks_mhz or {}).get(folding)
        if measured is not None:
            clocks["engine"] = measured
        return min(clocks.get(unit, self.clock_mhz) for unit in (units or ("engine",)))

    @property
    def device(self):
        """The FPGA device, e.g. ``"iCE40UP5K"`` (the platform's ``device``)."""
        return self.platform.device

    @property
    def package(self):
        """The FPGA package, e.g. ``"SG48"`` (the platform's ``package``)."""
        return self.platform.package

    @cached_property
    def clock_hz(self):
        """Frequency of the board clock the design runs on, in Hz (the platform's
        ``default_clk_frequency``)."""
        return int(self.platform().default_clk_frequency)

    @property
    def clock_mhz(self):
        """The board clock in MHz."""
        return self.clock_hz / 1e6

    @property
    def block_ram_bits_total(self):
        """Data bits of all block RAMs together."""
        return self.block_rams * self.block_ram_bits

    @property
    def block_ram_bits_per_cycle(self):
        """Bits all block RAMs together deliver per cycle: the memory bound of an engine."""
        return self.block_rams * self.block_ram_port_bits

    def block_rams_needed(self, depth, width):
        """Fewest block RAMs that hold a ``depth`` x ``width`` memory read a whole row at a time.

        Each block RAM takes one of :attr:`block_ram_modes`; a memory wider or deeper than the
        mode is split over several.

        Raises
        ------
        ValueError
            If ``depth`` or ``width`` is not a positive integer.
        """
        depth, width = _count("depth", depth), _count("width", width)
        return min(-(-width // w) * -(-depth // d) for d, w in self.block_ram_modes)
