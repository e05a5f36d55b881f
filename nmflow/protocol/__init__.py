"""The host link protocols: the contract between every nmflow board and its host, below both.

The specification is docs/contracts.md, section 5 (the framing and the engine's and metaplastic
unit's commands) and docs/eqprop_protocol.md (the EqProp unit's commands); these modules follow
it byte for byte and the tests compare the gateware with their twins using ``==``:

* :mod:`~nmflow.protocol.framing`: frames, the CRC, error codes and the receiver's rules, once
  (:class:`~nmflow.protocol.framing.FrameModel`, the twin of every link's receiver);
* :mod:`~nmflow.protocol.engine`: the inference engine's command set, INFO, INFER and the
  read-error injector's ERRORS (version 2), and :class:`~nmflow.protocol.engine.LinkModel`;
* :mod:`~nmflow.protocol.metaplastic`: the metaplastic unit's UPDATE, LOAD and READ on the
  engine's link (version 4);
* :mod:`~nmflow.protocol.eqprop`: the EqProp unit's command set and its link's twin.

The names of the first three are also importable from here (``from nmflow.protocol import
Command, LinkModel``). This package imports nothing of nmflow but :mod:`nmflow.errors`.
"""

from .engine import *                     # noqa: F401,F403
from .engine import __all__ as _engine
from .framing import *                    # noqa: F401,F403
from .framing import __all__ as _framing
from .metaplastic import *                # noqa: F401,F403
from .metaplastic import __all__ as _metaplastic

__all__ = list(_framing) + list(_engine) + list(_metaplastic)
