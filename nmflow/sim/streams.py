"""Stream helpers for Amaranth-simulator testbenches, following ``amaranth.lib.stream``'s rules.

A producer raises ``valid`` with its payload without waiting for ``ready`` and holds both until
the beat is taken (``valid & ready`` at a clock edge); a consumer may raise ``ready`` whenever it
likes. Every Amaranth-simulator harness of nmflow moves beats through these two helpers; both can
stall at random (``rng`` and a probability), so that each harness applies random backpressure and
random gaps.
"""

__all__ = ["stream_put", "stream_get"]


async def stream_put(ctx, stream, payload, *, rng=None, valid=1.0):
    """Offer one beat on ``stream`` (from the producer's side) and return once it is taken.

    With ``rng`` (a :class:`random.Random`), each cycle before the beat is offered is idle with
    probability ``1 - valid``: a gap, never a retraction (once ``valid`` is high it stays high
    until the transfer).
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

    With ``rng``, ``ready`` is raised in each cycle with probability ``ready`` (random
    backpressure); without it, ``ready`` stays high until a beat comes.
    """
    while True:
        accept = rng is None or rng.random() < ready
        ctx.set(stream.ready, accept)
        *_, payload, is_valid = await ctx.tick().sample(stream.payload, stream.valid)
        if accept and is_valid:
            ctx.set(stream.ready, 0)
            return payload
