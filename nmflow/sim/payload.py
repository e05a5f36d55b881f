"""Pack and unpack flattened Amaranth struct payloads as Python integers (what cocotb sees)."""

from amaranth.hdl import Shape

__all__ = ["field", "unpack", "pack", "to_signed"]


def to_signed(value, width):
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


def field(layout, name):
    """``(offset, width, signed)`` of a member of a :class:`~amaranth.lib.data.StructLayout`."""
    member = layout[name]
    shape = Shape.cast(member.shape)
    return member.offset, shape.width, shape.signed


def unpack(layout, value):
    """A dict of the layout's members (integers, signed where the member is) from a flat value."""
    out = {}
    for name, member in layout:
        offset, width, signed = field(layout, name)
        raw = (value >> offset) & ((1 << width) - 1)
        out[name] = to_signed(raw, width) if signed else raw
    return out


def pack(layout, **values):
    """A flat integer from member values (signed values wrap to the member width)."""
    total = 0
    for name, value in values.items():
        offset, width, _ = field(layout, name)
        total |= (int(value) & ((1 << width) - 1)) << offset
    return total
