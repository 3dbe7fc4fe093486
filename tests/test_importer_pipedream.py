"""PipeDream graph.txt importer: units, lists, Input zeroing, sources/sinks, stage_id, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeenv.cli import main
from pipeenv.errors import PipeenvError
from pipeenv.importers.pipedream import from_pipedream, read_pipedream
from tests.conftest import PIPEDREAM_PROFILES

NODE = (
    "{id} -- {desc} -- forward_compute_time={f}, backward_compute_time={b}, "
    "activation_size={a}, parameter_size={p}"
)

SNIPPET = "\n".join(
    [
        NODE.format(id="node1", desc="Input", f="18.962", b="0.000", a="1000.0", p="0.000"),
        NODE.format(
            id="node3",
            desc="Linear(in_features=4, out_features=2)",
            f="2.000",
            b="4.000",
            a="400.0",
            p="40.000",
        ),
        NODE.format(
            id="node2",
            desc="Conv2d(3, 64, kernel_size=(7, 7))",
            f="1.500",
            b="3.000",
            a="[100.0; 20.0; 3.0]",
            p="37632.000",
        ),
        "\tnode1 -- node2",
        "\tnode2 -- node3",
    ]
)


def write(tmp_path: Path, text: str, name: str = "graph.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_units_list_and_input_zeroing(tmp_path: Path) -> None:
    g = from_pipedream(write(tmp_path, SNIPPET))
    assert g.name == tmp_path.name
    assert g.microbatch_size == 1
    conv, linear, inp = g.node("node2"), g.node("node3"), g.node("node1")
    assert (conv.forward_s, conv.backward_s) == (0.0015, 0.003)
    assert conv.output_bytes == 123.0
    assert conv.param_bytes == 37632.0
    assert conv.op == "Conv2d"
    assert conv.extra["description"] == "Conv2d(3, 64, kernel_size=(7, 7))"
    assert (linear.forward_s, linear.backward_s, linear.output_bytes) == (0.002, 0.004, 400.0)
    assert (inp.forward_s, inp.backward_s, inp.output_bytes) == (0.0, 0.0, 1000.0)
    assert inp.extra["data_loading_s"] == pytest.approx(0.018962)
    assert "node1 (18.962 ms)" in g.source and "zeroed" in g.source
    assert g.order == ("node1", "node2", "node3")
    assert g.edges == (("node1", "node2"), ("node2", "node3"))


def test_scaling_to_microbatch(tmp_path: Path) -> None:
    g = from_pipedream(write(tmp_path, SNIPPET), batch_size=8, microbatch_size=2)
    conv = g.node("node2")
    assert g.microbatch_size == 2
    assert conv.forward_s == pytest.approx(0.0015 / 4)
    assert conv.backward_s == pytest.approx(0.003 / 4)
    assert conv.output_bytes == pytest.approx(123.0 / 4)
    assert conv.param_bytes == 37632.0
    assert "8 to 2 samples" in g.source
    whole = from_pipedream(write(tmp_path, SNIPPET), batch_size=8)
    assert whole.microbatch_size == 8 and whole.node("node2").forward_s == 0.0015


def test_several_sources_sinks_and_stage_id(tmp_path: Path) -> None:
    text = "\n".join(
        [
            NODE.format(id="node1", desc="Input0", f="0.0", b="0.0", a="8.0", p="0.0"),
            NODE.format(id="node2", desc="hidden", f="0.0", b="0.0", a="0.0", p="0.0")
            + " -- stage_id=0",
            NODE.format(id="node3", desc="LSTM(2, 2)", f="1.0", b="2.0", a="[4.0; 1.0]", p="96.0")
            + " -- stage_id=1",
            NODE.format(id="node4", desc="__getitem__(0)", f="0.0", b="0.0", a="4.0", p="0.0"),
            NODE.format(id="node5", desc="__getitem__(1)", f="0.0", b="0.0", a="1.0", p="0.0"),
            "\tnode1 -- node3",
            "\tnode2 -- node3",
            "\tnode3 -- node4",
            "\tnode3 -- node5",
        ]
    )
    g = from_pipedream(write(tmp_path, text, "two_inputs.txt"))
    assert g.name == "two_inputs"
    assert (g.num_nodes, g.num_edges) == (5, 4)
    assert g.node("node2").extra["stage_id"] == 0
    assert g.node("node3").extra["stage_id"] == 1
    assert "stage_id" not in g.node("node1").extra
    assert g.node("node3").output_bytes == 5.0
    a = g.arrays
    assert int((a.pred_ptr[1:] == a.pred_ptr[:-1]).sum()) == 2  # two sources
    assert int((a.succ_ptr[1:] == a.succ_ptr[:-1]).sum()) == 2  # two dead-end sinks


def test_cli_writes_graph_and_refuses_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile, out = write(tmp_path, SNIPPET), tmp_path / "g.json"
    assert main(["import-pipedream", str(profile), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == "pipeenv.graph/v1"
    assert [n["id"] for n in doc["nodes"]] == ["node1", "node3", "node2"]
    assert "3 nodes, 2 edges" in capsys.readouterr().out
    assert main(["import-pipedream", str(profile), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--force" in captured.err and captured.err.count("\n") == 1
    assert (
        main(
            [
                "import-pipedream",
                str(profile),
                "--out",
                str(out),
                "--force",
                "--batch-size",
                "8",
                "--microbatch-size",
                "4",
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["microbatch_size"] == 4


SHORT = {"F=": "forward_compute_time=", "B=": "backward_compute_time=", "A=": "activation_size="}


def short(line: str) -> str:
    """A node line written with F=, B=, A=, P= for the four field names."""
    for abbrev, name in {**SHORT, "P=": "parameter_size="}.items():
        line = line.replace(abbrev, name)
    return line


BAD_LINES = [
    (short("node1 -- Input"), r":1: node line must read"),
    (
        short("node1 -- X -- F=1.0, B=1.0, A=1.0"),
        r":1: missing field 'parameter_size'",
    ),
    (
        short("node1 -- X -- F=abc, B=1.0, A=1.0, P=0.0"),
        r":1: forward_compute_time='abc' is not a number",
    ),
    (
        short("node1 -- X -- F=-1.0, B=1.0, A=1.0, P=0.0"),
        r":1: forward_compute_time='-1.0' must be >= 0",
    ),
    (
        short("node1 -- X -- F=nan, B=1.0, A=1.0, P=0.0"),
        r":1: forward_compute_time='nan' must be finite",
    ),
    (
        short("node1 -- X -- F=1.0, B=1.0, A=[1.0; 2.0, P=0.0"),
        r":1: activation_size list .* has no closing",
    ),
    (
        short("node1 -- X -- F=1.0, B=1.0, A=[], P=0.0"),
        r":1: activation_size list is empty",
    ),
    (
        short("node1 -- X -- F=1.0, B=1.0, A=1.0, P=0.0, flops=3"),
        r":1: unknown field 'flops'",
    ),
    (
        short("node1 -- X -- F=1.0, F=1.0, A=1.0, P=0.0"),
        r":1: field 'forward_compute_time' given twice",
    ),
    (
        short("node1 -- X -- F=1.0 B=1.0, A=1.0, P=0.0"),
        r":1: missing field 'backward_compute_time'",
    ),
    (
        short("node1 -- X -- forward_compute_time, B=1.0, A=1.0, P=0.0"),
        r":1: expected key=value",
    ),
    (
        short("node1 -- X -- F=1.0, B=1.0, A=1.0, P=0.0 -- stage_id=x"),
        r":1: stage_id='x' is not an integer",
    ),
    (
        short("node1 -- X -- F=1.0, B=1.0, A=1.0, P=0.0 -- stage_id=-1"),
        r":1: stage_id='-1' must be >= 0",
    ),
    (
        short("no de -- X -- F=1.0, B=1.0, A=1.0, P=0.0"),
        r":1: bad node id",
    ),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_bad_node_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, line)
    with pytest.raises(PipeenvError, match=re.escape(str(path)) + message):
        from_pipedream(path)


def node(i: int) -> str:
    return NODE.format(id=f"node{i}", desc="X", f="1.0", b="1.0", a="1.0", p="0.0")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{node(1)}\n{node(1)}", r":2: node 'node1' already defined on line 1"),
        (f"{node(1)}\n\tnode1 -- node9", r":2: edge node1 -- node9: unknown node 'node9'"),
        (f"{node(1)}\n\tnode1", r":2: edge line must read"),
        (
            f"{node(1)}\n{node(2)}\n\tnode1 -- node2\n\tnode1 -- node2",
            r":4: edge node1 -- node2 already listed on line 3",
        ),
        (f"{node(1)}\n\tnode1 -- node1", r":2: edge node1 -- node1 is a self-loop"),
        (
            f"{node(1)}\n{node(2)}\n\tnode1 -- node2\n\tnode2 -- node1",
            r": graph: edge .* lies on a cycle",
        ),
        ("\n\n", r": has no node lines"),
    ],
)
def test_bad_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PipeenvError, match=re.escape(str(path)) + message):
        from_pipedream(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PipeenvError, match="pipedream: file not found"):
        from_pipedream(tmp_path / "absent.txt")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"microbatch_size": 2}, "microbatch_size needs batch_size"),
        ({"batch_size": 4, "microbatch_size": 8}, "microbatch_size 8 exceeds batch_size 4"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": 4, "microbatch_size": 0}, "microbatch_size must be an integer >= 1"),
    ],
)
def test_bad_size_options(tmp_path: Path, options: dict[str, int], message: str) -> None:
    with pytest.raises(PipeenvError, match=message):
        from_pipedream(write(tmp_path, SNIPPET), **options)


# SOURCE.md: node lines, edge lines, fwd and bwd ms (non-Input nodes), params MB.
REAL = {
    "alexnet/graph.txt": (23, 23, 44.8, 40.5, 244.4),
    "densenet121/graph.txt": (429, 487, 177.4, 148.8, 31.9),
    "inception_v3/graph.txt": (326, 362, 289.3, 399.8, 108.6),
    "nasnetalarge/graph.txt": (1251, 1468, 409.1, 249.2, 369.0),
    "nasnetamobile/graph.txt": (921, 1078, 322.9, 261.4, 34.3),
    "resnet101/graph.txt": (347, 380, 197.3, 213.8, 178.2),
    "resnet18/graph.txt": (71, 79, 107.4, 152.3, 46.8),
    "resnet18/graph_copy.txt": (71, 79, 16.7, 221.7, 46.8),
    "resnet50/graph.txt": (177, 193, 182.5, 260.9, 102.2),
    "resnext101/graph.txt": (347, 380, 239.1, 318.3, 176.7),
    "resnext50/graph.txt": (177, 193, 221.8, 369.0, 100.1),
    "squeezenet1_0/graph.txt": (68, 76, 113.2, 172.1, 5.0),
    "vgg16/graph.txt": (41, 41, 233.9, 438.6, 553.4),
    "gnmt/graph.txt": (48, 58, 33.5, 55.9, 775.1),
    "gnmt_large/graph.txt": (96, 122, 182.6, 337.9, 1110.9),
    "test_graphs/resnet50_partitioned.txt": (177, 193, 178.5, 254.8, 102.2),
    "test_graphs/vgg16_partitioned.txt": (41, 41, 37.3, 626.2, 553.4),
    "test_graphs/resnext50_generated.txt": (177, 193, 40.6, 251.1, 100.1),
}


@pytest.mark.parametrize("relpath", sorted(REAL))
def test_real_profiles(relpath: str) -> None:
    path = PIPEDREAM_PROFILES / relpath
    if not path.exists():
        pytest.skip(f"{path} not present")
    nodes, edges, fwd_ms, bwd_ms, params_mb = REAL[relpath]
    g = from_pipedream(path)
    assert (g.num_nodes, g.num_edges) == (nodes, edges)
    a = g.arrays
    assert a.forward_s.sum() * 1000 == pytest.approx(fwd_ms, abs=0.051)
    assert a.backward_s.sum() * 1000 == pytest.approx(bwd_ms, abs=0.051)
    assert g.total_param_bytes / 1e6 == pytest.approx(params_mb, abs=0.051)
    for n in g.nodes:
        if n.op.startswith("Input"):
            assert n.forward_s == 0.0 and n.backward_s == 0.0
    assert read_pipedream(path).nodes[0].line == 1
    staged = [n for n in g.nodes if "stage_id" in n.extra]
    assert len(staged) == (nodes if "partitioned" in relpath else 0)
