"""Planners that turn an operator graph and a cluster into a pipeline plan.

``agents.make(name, **options)`` builds a registered agent; ``agents.names()`` lists them and
``agents.describe()`` gives one line each. Importing the package registers the baselines
(:mod:`agents.baselines`), ``pipedream-dp`` (:mod:`agents.pipedream_dp`) and the search agents
(:mod:`agents.search`).
"""

from agents import baselines, oneshot_gcn, pipedream_dp, ppo_gcn, recurrent_gcn, search
from agents.base import (
    Agent,
    BaseAgent,
    PlanRequest,
    describe,
    make,
    names,
    option_names,
    register,
)

__all__ = [
    "Agent",
    "BaseAgent",
    "PlanRequest",
    "baselines",
    "describe",
    "make",
    "names",
    "oneshot_gcn",
    "option_names",
    "pipedream_dp",
    "ppo_gcn",
    "recurrent_gcn",
    "register",
    "search",
]
