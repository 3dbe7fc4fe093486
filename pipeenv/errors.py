"""The one error type users see: a single line that names the field, node, edge or rule."""

from __future__ import annotations

__all__ = ["PipeenvError"]


class PipeenvError(ValueError):
    """Invalid user input (graph, cluster, plan, option).

    The message is one line and names what is wrong, e.g.
    ``graph: edge ('a', 'b'): endpoint 'b' is not a node``. The CLI prints it and exits 2.
    """
