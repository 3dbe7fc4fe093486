"""pipeenv.cluster/v1: presets, links, validation and round trips."""

from __future__ import annotations

import copy

import pytest

from pipeenv.cluster import PRESETS, Cluster, load_cluster, preset_names
from pipeenv.errors import PipeenvError

DOC = {
    "format": "pipeenv.cluster/v1",
    "name": "two-nodes",
    "devices": [
        {"name": "gpu0", "node": 0, "speed": 1.0, "memory_bytes": 85899345920},
        {"name": "gpu1", "node": 0, "speed": 1.0, "memory_bytes": 85899345920},
        {"name": "gpu2", "node": 1, "speed": 0.5, "memory_bytes": 34359738368},
    ],
    "intra_node": {"bandwidth_Bps": 3.0e11, "latency_s": 5e-6},
    "inter_node": {"bandwidth_Bps": 2.5e10, "latency_s": 2e-5},
}


def test_links_follow_nodes():
    c = Cluster.from_dict(DOC)
    assert c.link(0, 1).bandwidth_Bps == 3.0e11
    assert c.link(1, 2).bandwidth_Bps == 2.5e10
    assert c.link(2, 0).transfer_s(2.5e10) == pytest.approx(1.0 + 2e-5)
    bw, lat = c.link_arrays
    assert bw[0, 2] == 2.5e10 and lat[0, 1] == 5e-6


def test_round_trip(tmp_path):
    c = Cluster.from_dict(DOC)
    c.save(tmp_path / "c.json")
    assert load_cluster(str(tmp_path / "c.json")).to_dict() == c.to_dict() == {**DOC}


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_valid_and_round_trips(name):
    c = load_cluster(name)
    assert c.name == name
    assert Cluster.from_dict(c.to_dict()).to_dict() == c.to_dict()
    assert PRESETS[name][0]  # a description for `pipeenv clusters`


def test_required_presets_exist():
    sizes = {name: load_cluster(name).num_devices for name in preset_names()}
    assert sizes["4xA100-nvlink"] == 4 and sizes["8xH100-nvlink"] == 8
    assert sizes["2x4xA100-ib"] == 8 and load_cluster("2x4xA100-ib").num_nodes == 2
    assert sizes["16xV100-25gbe"] == 16
    hetero = load_cluster("hetero-4xA100-4xV100")
    assert len({d.speed for d in hetero.devices}) == 2
    assert len({d.memory_bytes for d in hetero.devices}) == 2
    assert sizes["cpu-2"] == 2


def _changed(path, value):  # type: ignore[no-untyped-def]
    doc = copy.deepcopy(DOC)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("format",), "x", "field 'format' must be 'pipeenv.cluster/v1'"),
        (("devices",), [], "at least one device"),
        (("devices", 1, "name"), "gpu0", "device 1 .'gpu0'.: duplicate device name"),
        (("devices", 0, "speed"), 0, "device 0: field 'speed' must be > 0"),
        (("devices", 0, "memory_bytes"), -1, "device 0: field 'memory_bytes' must be > 0"),
        (("devices", 0, "node"), -1, "device 0: field 'node' must be an integer >= 0"),
        (("devices", 0, "speed"), KeyError, "device 0: missing required field 'speed'"),
        (("intra_node", "bandwidth_Bps"), 0, "intra_node: field 'bandwidth_Bps' must be > 0"),
        (("inter_node", "latency_s"), -1e-6, "inter_node: field 'latency_s' must be >= 0"),
        (("inter_node",), KeyError, "'inter_node' is required when devices span several nodes"),
        (("intra_node",), KeyError, "missing required field 'intra_node'"),
    ],
)
def test_each_rule_has_its_error(path, value, message):
    with pytest.raises(PipeenvError, match=message):
        Cluster.from_dict(_changed(path, value))


def test_unknown_preset_names_the_presets():
    with pytest.raises(PipeenvError, match="neither a preset .*4xA100-nvlink"):
        load_cluster("9xTPU")
