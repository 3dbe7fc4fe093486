"""The agent interface, the registry behind :func:`make`, and what every planner shares.

An agent turns a graph and a cluster into a :class:`~pipeenv.plan.Plan`::

    import agents
    planner = agents.make("pipedream-dp")
    plan = planner.plan(graph, cluster, num_stages=4, microbatches=16, schedule="1f1b")

``num_stages`` is exact. ``data_parallel`` (R, replicas of the whole pipeline) is either given, or
None to let the agent choose; each agent's docstring says how it chooses. The returned plan has
``predicted`` filled by :func:`pipeenv.simulate` and ``agent`` naming the agent and its options.

Agents register with :func:`register` under a name; :func:`make` builds one from its name and
keyword options, refusing unknown names and options with a one-line :class:`PipeenvError`.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pipeenv.cluster import Cluster
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.plan import Plan
from pipeenv.schedules import SCHEDULES
from pipeenv.simulator import SimResult, simulate

__all__ = [
    "Agent",
    "BaseAgent",
    "PlanRequest",
    "better",
    "check_int_option",
    "describe",
    "make",
    "names",
    "option_names",
    "register",
    "score",
]


@runtime_checkable
class Agent(Protocol):
    """Anything that plans: ``plan(graph, cluster, *, num_stages, microbatches, ...) -> Plan``."""

    name: str

    def plan(
        self,
        graph: OperatorGraph,
        cluster: Cluster,
        *,
        num_stages: int,
        microbatches: int,
        schedule: str = "1f1b",
        data_parallel: int | None = None,
    ) -> Plan: ...


@dataclass(frozen=True)
class PlanRequest:
    """A checked planning request.

    :param graph: the graph to partition.
    :param cluster: the devices.
    :param num_stages: S, exact.
    :param microbatches: M per replica and iteration.
    :param schedule: ``gpipe`` or ``1f1b``.
    :param data_parallel: R, or None to let the agent choose.
    """

    graph: OperatorGraph
    cluster: Cluster
    num_stages: int
    microbatches: int
    schedule: str
    data_parallel: int | None

    @property
    def max_replicas(self) -> int:
        """The largest R with ``S * R <= number of devices``."""
        return self.cluster.num_devices // self.num_stages

    def replica_choices(self) -> list[int]:
        """``[data_parallel]`` when given, else every R from 1 to :attr:`max_replicas`."""
        if self.data_parallel is not None:
            return [self.data_parallel]
        return list(range(1, self.max_replicas + 1))

    def plan_fields(self, replicas: int, devices: Iterable[int], agent: dict[str, Any]) -> dict:
        """Keyword arguments of :meth:`Plan.from_stages` for this request."""
        return {
            "num_stages": self.num_stages,
            "devices": tuple(devices),
            "data_parallel": replicas,
            "microbatches": self.microbatches,
            "schedule": self.schedule,
            "cluster": self.cluster.name,
            "agent": agent,
        }


def _check_request(
    agent: str,
    graph: OperatorGraph,
    cluster: Cluster,
    num_stages: Any,
    microbatches: Any,
    schedule: Any,
    data_parallel: Any,
) -> PlanRequest:
    for field, value in (("num_stages", num_stages), ("microbatches", microbatches)):
        check_int_option(agent, field, value, minimum=1)
    if data_parallel is not None:
        check_int_option(agent, "data_parallel", data_parallel, minimum=1)
    if schedule not in SCHEDULES:
        raise PipeenvError(
            f"agent {agent!r}: schedule {schedule!r} is unknown (known: {', '.join(SCHEDULES)})"
        )
    if num_stages > graph.num_nodes:
        raise PipeenvError(
            f"agent {agent!r}: num_stages {num_stages} exceeds the {graph.num_nodes} nodes of "
            f"graph {graph.name!r} (every stage needs a node)"
        )
    replicas = 1 if data_parallel is None else data_parallel
    if num_stages * replicas > cluster.num_devices:
        raise PipeenvError(
            f"agent {agent!r}: num_stages x data_parallel = {num_stages * replicas} exceeds the "
            f"{cluster.num_devices} devices of cluster {cluster.name!r}"
        )
    return PlanRequest(graph, cluster, num_stages, microbatches, schedule, data_parallel)


def check_int_option(agent: str, option: str, value: Any, *, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``.

    :raises PipeenvError: naming the agent, the option and the rule.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise PipeenvError(f"agent {agent!r}: option {option!r} must be an integer, got {value!r}")
    if value < minimum:
        raise PipeenvError(f"agent {agent!r}: option {option!r} must be >= {minimum}, got {value}")
    return value


def score(result: SimResult) -> tuple[bool, float]:
    """Sort key of a simulated plan: feasible plans first, then higher throughput."""
    return (result.feasible, result.throughput_samples_per_s)


def better(a: SimResult, b: SimResult | None) -> bool:
    """True when ``a`` is strictly better than ``b`` (or ``b`` is None)."""
    return b is None or score(a) > score(b)


def _predicted(result: SimResult) -> dict[str, Any]:
    return {
        "iteration_s": result.iteration_s,
        "throughput_samples_per_s": result.throughput_samples_per_s,
        "feasible": result.feasible,
    }


class BaseAgent(ABC):
    """Shared frame: checks the request, calls :meth:`_plan`, fills ``predicted``.

    Subclasses set :attr:`name`, take their options as keyword-only constructor arguments, and
    implement :meth:`_plan`.
    """

    name: ClassVar[str]

    def options(self) -> dict[str, Any]:
        """The agent's options (recorded in each plan's ``agent`` field)."""
        return {}

    def agent_record(self, **facts: Any) -> dict[str, Any]:
        """The plan's ``agent`` field: name, options and any facts about the search."""
        return {"name": self.name, **self.options(), **facts}

    def plan(
        self,
        graph: OperatorGraph,
        cluster: Cluster,
        *,
        num_stages: int,
        microbatches: int,
        schedule: str = "1f1b",
        data_parallel: int | None = None,
    ) -> Plan:
        """A plan of ``graph`` on ``cluster`` with exactly ``num_stages`` stages.

        :param graph: the operator graph.
        :param cluster: the devices.
        :param num_stages: S.
        :param microbatches: M per replica and iteration.
        :param schedule: ``gpipe`` or ``1f1b``.
        :param data_parallel: R, or None to let the agent choose.
        :raises PipeenvError: when the request cannot be met (more stages than nodes, more
            devices than the cluster has, ...).
        """
        request = _check_request(
            self.name, graph, cluster, num_stages, microbatches, schedule, data_parallel
        )
        plan, result = self._plan(request)
        if result is None:
            result = simulate(graph, cluster, plan)
        return plan.replace(predicted=_predicted(result))

    @abstractmethod
    def _plan(self, request: PlanRequest) -> tuple[Plan, SimResult | None]:
        """The plan, and its simulation when the agent already has it (else None)."""

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


@dataclass(frozen=True)
class _Entry:
    description: str
    factory: Callable[..., Agent]


_REGISTRY: dict[str, _Entry] = {}
_AgentT = TypeVar("_AgentT", bound=type)


def register(name: str, description: str) -> Callable[[_AgentT], _AgentT]:
    """Class decorator: make the agent available as ``make(name, **options)``.

    :param name: the agent's name (``pipeenv plan --agent NAME``).
    :param description: one line for ``pipeenv agents``.
    :raises PipeenvError: when the name is taken.
    """

    def decorate(cls: _AgentT) -> _AgentT:
        if name in _REGISTRY:
            raise PipeenvError(f"agents: name {name!r} is already registered")
        cls.name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = _Entry(description, cls)
        return cls

    return decorate


def names() -> list[str]:
    """Registered agent names, in registration order."""
    return list(_REGISTRY)


def describe() -> dict[str, str]:
    """One-line description of every registered agent."""
    return {name: entry.description for name, entry in _REGISTRY.items()}


def option_names(name: str) -> list[str]:
    """The keyword options agent ``name`` accepts.

    :raises PipeenvError: on an unknown name.
    """
    if name not in _REGISTRY:
        raise PipeenvError(f"agent {name!r} is unknown (known: {', '.join(_REGISTRY)})")
    params = inspect.signature(_REGISTRY[name].factory).parameters
    return [p for p, spec in params.items() if spec.kind is inspect.Parameter.KEYWORD_ONLY]


def make(name: str, **options: Any) -> Agent:
    """The agent registered as ``name``, built with ``options``.

    :raises PipeenvError: on an unknown name, an unknown option or a bad option value.
    """
    if name not in _REGISTRY:
        raise PipeenvError(f"agent {name!r} is unknown (known: {', '.join(_REGISTRY)})")
    known = option_names(name)
    for option in options:
        if option not in known:
            listed = ", ".join(known) if known else "none"
            raise PipeenvError(
                f"agent {name!r}: option {option!r} is unknown (known options: {listed})"
            )
    return _REGISTRY[name].factory(**options)
