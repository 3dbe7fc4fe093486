"""pipeenv: pipeline-parallel partitioning of DNNs as a reinforcement-learning problem.

The data flows graph -> cluster -> plan -> simulator -> result::

    import pipeenv
    graph = pipeenv.zoo.load("resnet50")
    cluster = pipeenv.load_cluster("4xA100-nvlink")
    plan = pipeenv.load_plan("plan.json")
    result = pipeenv.simulate(graph, cluster, plan)
    print(result.to_dict())

Importing the package registers the Gymnasium environments ``PipelinePartition-v0`` and
``PipelinePartitionOneShot-v0``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeenv.cluster import Cluster, Device, Link, load_cluster
from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph, load_graph
from pipeenv.plan import Plan, load_plan
from pipeenv.simulator import SimResult, simulate, throughput_upper_bound

if TYPE_CHECKING:
    from pipeenv import zoo

__all__ = [
    "Cluster",
    "Device",
    "Link",
    "Node",
    "OperatorGraph",
    "PipeenvError",
    "Plan",
    "SimResult",
    "load_cluster",
    "load_graph",
    "load_plan",
    "simulate",
    "throughput_upper_bound",
    "zoo",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The zoo imports torch; load it only when asked for.
    if name == "zoo":
        import importlib

        return importlib.import_module("pipeenv.zoo")
    raise AttributeError(f"module 'pipeenv' has no attribute {name!r}")


from pipeenv.envs import register_envs  # noqa: E402  (needs the names above)

register_envs()
