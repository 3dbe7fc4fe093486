"""pipeenv: pipeline-parallel partitioning of DNNs as a reinforcement-learning problem."""

from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph, load_graph

__all__ = ["Node", "OperatorGraph", "PipeenvError", "load_graph"]
__version__ = "0.1.0"
