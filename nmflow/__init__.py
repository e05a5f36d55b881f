"""nmflow: a design flow for neuromorphic hardware.

From a binarized or ternary PyTorch network to a verified, synthesized circuit on an open FPGA board.
Sub-packages follow the flow: ``golden`` (PyTorch/NumPy models), ``rtl`` (Amaranth components),
``sim`` (cocotb testbenches and runner), ``boards`` (board descriptions and tops, builds, host
driver) and ``scripts`` (the ``nmflow`` command line). Below them all sit plain modules that every
layer may use: ``errors``, ``fileio``, ``fixedpoint``, ``protocol`` (the host link contract shared
by the gateware and the host) and ``toolchain`` (where the open FPGA tools are). Imports only go
downwards (``golden <- rtl <- sim``, ``rtl <- boards``, everything ``<- scripts``);
``tests/test_layering.py`` checks it.
"""

__version__ = "0.1.0"
