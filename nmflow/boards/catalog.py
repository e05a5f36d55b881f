"""The boards nmflow builds for, by name: the one registry of :class:`~nmflow.boards.board.Board`
descriptions."""

from ..errors import NmflowError
from . import icebreaker, ulx3s
from .board import Board

__all__ = ["BOARDS", "get_board"]

#: Board name -> :class:`~nmflow.boards.board.Board`.
BOARDS = {board.name: board for board in (icebreaker.BOARD, ulx3s.BOARD)}


def get_board(board):
    """Return the :class:`~nmflow.boards.board.Board` of ``board`` (a name or a Board).

    Raises
    ------
    NmflowError
        If ``board`` is not a known board name.
    """
    if isinstance(board, Board):
        return board
    if not isinstance(board, str) or board not in BOARDS:
        raise NmflowError(f"board must be one of {', '.join(BOARDS)}, not {board!r}")
    return BOARDS[board]
