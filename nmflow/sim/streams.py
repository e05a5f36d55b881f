"""Stream helpers for Amaranth-simulator testbenches, following ``amaranth.lib.stream``'s rules.

A producer raises ``valid`` with its payload without waiting for ``ready`` and holds both until
the beat is taken (``valid & ready`` at a clock edge); a consumer may raise ``ready`` whenever it
likes. Every Amaranth-simulator harness of nmflow moves beats through these two helpers; both can
stall at random (``rng`` and a probability), so that each harness applies random backpressure and
random gaps.

:func:`watchdog_cycles` is the stall rule every engine harness (Amaranth's simulator and cocotb)
shares: how long a harness waits for the next finished inference before it calls the design
stalled.
"""

import numbers

__all__ = ["stream_put", "stream_get", "watchdog_cycles"]


async def stream_put(ctx, stream, payload, *, rng=None, valid=1.0):
    """Offer one beat on ``stream`` (from the producer's side) and return once it is taken.

    ``valid`` and ``payload`` are set before the first clock edge is awaited, whatever ``ready``
    is, and held until the edge at which ``ready`` is high too; ``valid`` is low again when this
    returns (the next call raises it in the same cycle, so back-to-back beats have no gap).

    Parameters
    ----------
    ctx : :class:`amaranth.sim.SimulatorContext`
    stream : :class:`amaranth.lib.stream.Interface`
        The stream, seen from its producer.
    payload : value-castable
        The beat.
    rng : :class:`random.Random`, optional
        With it, each cycle before the beat is offered is idle with probability ``1 - valid``:
        a gap, never a retraction (once ``valid`` is high it stays high until the transfer).
    valid : float
        Probability of offering the beat in a cycle, with ``rng`` (a positive number up to 1).

    Latency: returns right after the clock edge that took the beat; at least one cycle.
    """
    if rng is not None:
        while rng.random() >= valid:
            await ctx.tick()
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, rng=None, ready=1.0):
    """Take one beat from ``stream`` (from the consumer's side) and return its payload.

    The payload is the value sampled at the clock edge where ``valid & ready`` held (for a
    ``data`` layout, a ``data.Const`` whose fields read as attributes). ``ready`` is low again
    when this returns.

    Parameters
    ----------
    ctx : :class:`amaranth.sim.SimulatorContext`
    stream : :class:`amaranth.lib.stream.Interface`
        The stream, seen from its consumer (not an always-ready one: its ``ready`` is set).
    rng : :class:`random.Random`, optional
        With it, ``ready`` is raised in each cycle with probability ``ready`` (random
        backpressure); without it, ``ready`` stays high until a beat comes.
    ready : float
        Probability of accepting in a cycle, with ``rng`` (a positive number up to 1).

    Latency: returns right after the clock edge that took the beat; at least one cycle.
    """
    while True:
        accept = rng is None or rng.random() < ready
        ctx.set(stream.ready, accept)
        # Awaiting a tick returns (clock edge, reset active, *sampled values).
        _, _, payload, is_valid = await ctx.tick().sample(stream.payload, stream.valid)
        if accept and is_valid:
            ctx.set(stream.ready, 0)
            return payload


def watchdog_cycles(cycles_per_inference, *, ready=1.0, valid=1.0):
    """Cycles a harness waits for the next finished inference before it calls the design stalled.

    ``4 * cycles_per_inference + 1000`` when the streams never stall, scaled by ``1 / ready`` and
    ``1 / valid`` (the probabilities with which the harness accepts result beats and offers input
    beats): generous for a working engine, which finishes one inference per
    ``cycles_per_inference`` cycles plus its stalls, and short enough that a stalled design ends
    a simulation in seconds rather than hanging it.

    Raises
    ------
    ValueError
        If ``cycles_per_inference`` is not a positive integer, or ``ready`` or ``valid`` is not a
        probability above 0.
    """
    if isinstance(cycles_per_inference, bool) \
            or not isinstance(cycles_per_inference, numbers.Integral) or cycles_per_inference < 1:
        raise ValueError(f"cycles_per_inference must be a positive integer, not "
                         f"{cycles_per_inference!r}")
    for name, value in (("ready", ready), ("valid", valid)):
        if not 0 < value <= 1:
            raise ValueError(f"{name} must be a probability above 0 and at most 1, not {value!r}")
    return int((4 * cycles_per_inference + 1000) / (ready * valid)) + 1
