"""Episode records: JSON round trip, replay reproduces the return, tampering is caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from env_helpers import chain, masked_rollout, random_dag, small_cluster

from pipeenv.envs import (
    EpisodeRecord,
    PipelinePartitionEnv,
    PipelinePartitionOneShotEnv,
    replay,
)
from pipeenv.errors import PipeenvError


def sequential_record(tmp_path: Path, *, invalid: bool = False) -> EpisodeRecord:
    path = tmp_path / "g.json"
    random_dag(30, 3).save(path)
    env = PipelinePartitionEnv(
        graph=str(path), cluster=small_cluster(4), num_stages=4, max_nodes=16, reward="speedup"
    )
    if invalid:
        env.reset(seed=1)
        rng = np.random.default_rng(1)
        done = False
        while not done:
            _, _, done, _, _ = env.step(int(rng.integers(4)))
    else:
        masked_rollout(env, 1)
    return env.episode_record()


def test_record_round_trips_through_json(tmp_path: Path) -> None:
    record = sequential_record(tmp_path)
    record.save(tmp_path / "r.json")
    loaded = EpisodeRecord.load(tmp_path / "r.json")
    assert loaded == record
    assert loaded.graph.startswith("file:")
    assert len(loaded.actions) == 16  # coarsened to max_nodes
    assert (tmp_path / "r.json").stat().st_size < 4096


@pytest.mark.parametrize("invalid", [False, True])
def test_replay_reproduces_the_sequential_return(tmp_path: Path, invalid: bool) -> None:
    record = sequential_record(tmp_path, invalid=invalid)
    outcome = replay(record)
    assert outcome.matches
    assert outcome.reward == record.reward
    assert outcome.result.iteration_s == record.iteration_s
    outcome.check()


def test_replay_of_a_one_shot_record_with_a_graph_object() -> None:
    graph = random_dag(10, 4)
    env = PipelinePartitionOneShotEnv(
        graph=graph, cluster=small_cluster(4), num_stages=3, max_nodes=16
    )
    env.reset(seed=0)
    env.action_space.seed(0)
    env.step(env.action_space.sample())
    record = EpisodeRecord.from_dict(env.episode_record().to_dict())
    assert record.graph == "object:random"
    with pytest.raises(PipeenvError, match="pass graph="):
        replay(record)
    assert replay(record, graph=graph).reward == record.reward


def test_tampered_reward_fails_the_check(tmp_path: Path) -> None:
    doc = sequential_record(tmp_path).to_dict()
    doc["reward"] += 0.01
    with pytest.raises(PipeenvError, match="replay gives return"):
        replay(EpisodeRecord.from_dict(doc)).check()


def test_another_graph_is_refused() -> None:
    env = PipelinePartitionEnv(graph=chain(6), cluster=small_cluster(4), num_stages=2, max_nodes=8)
    masked_rollout(env, 0)
    record = env.episode_record()
    with pytest.raises(PipeenvError, match="the record was made on"):
        replay(record, graph=chain(7))


def test_record_errors() -> None:
    env = PipelinePartitionEnv(graph=chain(6), cluster=small_cluster(4), num_stages=2, max_nodes=8)
    env.reset(seed=0)
    with pytest.raises(PipeenvError, match="needs a finished episode"):
        env.episode_record()
    masked_rollout(env, 0)
    doc = env.episode_record().to_dict()
    with pytest.raises(PipeenvError, match="field 'format'"):
        EpisodeRecord.from_dict({**doc, "format": "other"})
    del doc["actions"]
    with pytest.raises(PipeenvError, match="missing required field 'actions'"):
        EpisodeRecord.from_dict(doc)


def test_too_few_or_too_many_actions_are_errors() -> None:
    graph = chain(6)
    env = PipelinePartitionEnv(graph=graph, cluster=small_cluster(4), num_stages=2, max_nodes=8)
    masked_rollout(env, 0)
    doc = env.episode_record().to_dict()
    with pytest.raises(PipeenvError, match="end before the episode does"):
        replay(EpisodeRecord.from_dict({**doc, "actions": doc["actions"][:-1]}), graph=graph)
    with pytest.raises(PipeenvError, match="more actions than the episode has steps"):
        replay(EpisodeRecord.from_dict({**doc, "actions": [*doc["actions"], 0]}), graph=graph)
