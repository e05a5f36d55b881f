from dataclasses import dataclass
@dataclass(frozen=True)
class BoardInfo:
    name: str
    title: str
    family: str
    device: str
    platform: object
    top: object
    clock_hz: int
    logic_cells: int
    logic_cell_type: str
    block_rams: int
    block_ram_bits: int
    block_ram_type: str
    dsps: int
    dsp_type: str
    target_mhz: float
    bitstream_suffix: str
    synth_opts: tuple = ()
