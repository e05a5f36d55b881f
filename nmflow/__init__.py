"""nmflow: a design flow for neuromorphic hardware.

From a binarized or ternary PyTorch network to a verified, synthesized circuit on an open FPGA board.
Sub-packages follow the flow: ``golden`` (PyTorch/NumPy models), ``rtl`` (Amaranth components),
``sim`` (cocotb testbenches and runner), ``boards`` (board tops, toolchain, host driver) and
``scripts`` (the ``nmflow`` command line).
"""

__version__ = "0.1.0"
