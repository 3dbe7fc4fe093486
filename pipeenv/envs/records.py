"""Episode records (``pipeenv.episode/v1``): save a finished episode, replay it to check its reward.

Modelled on CompilerGym's state records: a record names the graph (how to load it and the
structure hash it must have), embeds the cluster, lists the settings and the actions taken, and
states the episode return. :func:`replay` rebuilds the environment, takes the same actions and
compares returns, so a leaderboard entry can be verified by anyone with pipeenv::

    record = env.unwrapped.episode_record()
    record.save("episode.json")
    replay(EpisodeRecord.load("episode.json")).check()
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeenv.cluster import Cluster
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.jsonio import check_format, read_json, write_json
from pipeenv.simulator import SimResult

__all__ = ["FORMAT", "EpisodeRecord", "ReplayResult", "replay"]

FORMAT = "pipeenv.episode/v1"

_FIELDS = (
    "env_id",
    "graph",
    "graph_name",
    "graph_hash",
    "cluster",
    "settings",
    "seed",
    "actions",
    "reward",
    "iteration_s",
    "feasible",
)


@dataclass(frozen=True)
class EpisodeRecord:
    """One finished episode.

    :param env_id: ``PipelinePartition-v0`` or ``PipelinePartitionOneShot-v0``.
    :param graph: how to load the graph: ``zoo:<name>@<device>[/<microbatch_size>]``,
        ``file:<path>`` or ``object:<name>`` (replay then needs the graph passed in).
    :param graph_name: the graph's name.
    :param graph_hash: :attr:`OperatorGraph.graph_hash` of the original graph.
    :param cluster: the cluster as a ``pipeenv.cluster/v1`` dict.
    :param settings: pipeline, padding, reward and penalty settings of the episode.
    :param seed: the seed passed to ``reset`` (informative; the record does not depend on it).
    :param actions: the actions in the order taken (stages; one list per step in one-shot).
    :param reward: the episode return (sum of rewards).
    :param iteration_s: simulated iteration time of the final plan.
    :param feasible: whether the final plan fits in memory.
    """

    env_id: str
    graph: str
    graph_name: str
    graph_hash: str
    cluster: dict[str, Any]
    settings: dict[str, Any]
    seed: int | None
    actions: list[Any]
    reward: float
    iteration_s: float
    feasible: bool

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        d: dict[str, Any] = {"format": FORMAT}
        for name in _FIELDS:
            d[name] = getattr(self, name)
        d["actions"] = [_plain(a) for a in self.actions]
        return d

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> EpisodeRecord:
        """A record from its dict.

        :raises PipeenvError: on a wrong format or a missing field.
        """
        check_format(doc, FORMAT, "episode record")
        for name in _FIELDS:
            if name not in doc:
                raise PipeenvError(f"episode record: missing required field {name!r}")
        if not isinstance(doc["actions"], list):
            raise PipeenvError("episode record: field 'actions' must be a list")
        return cls(**{name: doc[name] for name in _FIELDS})

    def save(self, path: str | Path, *, overwrite: bool = True) -> None:
        """Write the record as JSON."""
        write_json(path, self.to_dict(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> EpisodeRecord:
        """Read a record written by :meth:`save`."""
        return cls.from_dict(read_json(path, "episode record"))


def _plain(action: Any) -> Any:
    if isinstance(action, list | tuple):
        return [_plain(a) for a in action]
    if hasattr(action, "tolist"):
        return action.tolist()
    return action


@dataclass(frozen=True)
class ReplayResult:
    """The outcome of replaying a record.

    :param reward: the return obtained now.
    :param recorded_reward: the return the record states.
    :param plan: the final plan (``pipeenv.plan/v1`` dict).
    :param result: the final simulation.
    """

    reward: float
    recorded_reward: float
    plan: dict[str, Any]
    result: SimResult

    @property
    def matches(self) -> bool:
        """True when the returns agree to 1e-9 (relative) or 1e-12 (absolute)."""
        return math.isclose(self.reward, self.recorded_reward, rel_tol=1e-9, abs_tol=1e-12)

    def check(self) -> None:
        """:raises PipeenvError: when the replayed return differs from the recorded one."""
        if not self.matches:
            raise PipeenvError(
                f"episode record: replay gives return {self.reward!r}, the record states "
                f"{self.recorded_reward!r}"
            )


def _graph_spec(record: EpisodeRecord, graph: OperatorGraph | None) -> tuple[Any, int | None]:
    """(graph argument, zoo microbatch_size) that rebuild the record's graph."""
    if graph is not None:
        return graph, None
    kind, _, rest = record.graph.partition(":")
    if kind == "file":
        return rest, None
    if kind == "zoo":
        name, _, device_mb = rest.partition("@")
        _, _, mb = device_mb.partition("/")
        return name, int(mb) if mb else None
    raise PipeenvError(
        f"episode record: graph {record.graph!r} was an object; pass graph= to replay it"
    )


def replay(record: EpisodeRecord, *, graph: OperatorGraph | None = None) -> ReplayResult:
    """Rebuild the record's environment, take its actions and report the return.

    :param record: the record.
    :param graph: the graph, for records of graphs given as objects (its hash must match).
    :raises PipeenvError: when the graph's hash differs from the record's, or an action cannot
        be taken.
    """
    import gymnasium as gym

    spec, microbatch_size = _graph_spec(record, graph)
    s = record.settings
    env = gym.make(
        f"pipeenv:{record.env_id}",
        graph=spec,
        cluster=Cluster.from_dict(record.cluster),
        num_stages=s["num_stages"],
        microbatches=s["microbatches"],
        schedule=s["schedule"],
        data_parallel=s["data_parallel"],
        max_nodes=s["padding_nodes"],
        max_stages=s["max_stages"],
        max_edges=s["max_edges"],
        reward=s["reward"],
        oom_penalty=s["oom_penalty"],
        invalid_action_penalty=s["invalid_action_penalty"],
        param_memory_factor=s["param_memory_factor"],
        microbatch_size=microbatch_size,
        disable_env_checker=True,
    )
    try:
        env.reset(options={"max_nodes": s["max_nodes"]})
        base = env.unwrapped
        if base.graph.graph_hash != record.graph_hash:  # type: ignore[attr-defined]
            raise PipeenvError(
                f"episode record: graph {record.graph_name!r} has hash "
                f"{base.graph.graph_hash[:19]}..., the record was made on "  # type: ignore[attr-defined]
                f"{record.graph_hash[:19]}..."
            )
        total = 0.0
        info: dict[str, Any] = {}
        terminated = False
        for action in record.actions:
            if terminated:
                raise PipeenvError("episode record: more actions than the episode has steps")
            _, reward, terminated, _, info = env.step(action)
            total += float(reward)
        if not terminated:
            raise PipeenvError("episode record: the actions end before the episode does")
        return ReplayResult(total, float(record.reward), info["plan"], base.result)  # type: ignore[attr-defined]
    finally:
        env.close()
