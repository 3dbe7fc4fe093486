"""``pipeenv zoo list|show|export`` and ``pipeenv profile``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeenv import zoo
from pipeenv.cli import main
from pipeenv.graph import OperatorGraph

torch.set_num_threads(1)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "zoo", "list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "nodes", "edges", "params"]
    assert [line.split()[0] for line in lines[1:]] == zoo.names()
    assert lines[1].split()[:7] == ["tiny-gpt", "36", "43", "3,323,392", "no", "a100", "float32"]


def test_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "zoo", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == zoo.names()
    vgg = next(r for r in rows if r["name"] == "vgg16")
    assert vgg == {
        "name": "vgg16", "nodes": 39, "edges": 38, "params": 138_357_544, "is_chain": True,
        "device": "a100", "dtype": "float32", "microbatch_size": 8,
    }  # fmt: skip


def test_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "zoo", "show", "resnet50")
    assert code == 0
    assert "params: 25,557,032" in out and "is_chain: False" in out
    code, out, _ = _run(capsys, "zoo", "show", "resnet50", "--json")
    assert json.loads(out)["nodes"] == 176


def test_export_writes_and_refuses_to_overwrite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "g.json"
    code, out, _ = _run(capsys, "zoo", "export", "tiny-gpt", "--out", str(path))
    assert code == 0 and out.startswith("wrote ")
    assert OperatorGraph.load(path).to_dict() == zoo.load("tiny-gpt").to_dict()
    code, out, err = _run(
        capsys, "zoo", "export", "tiny-gpt", "--out", str(path), "--device", "h100"
    )
    assert code == 2 and out == "" and "exists (pass --force to overwrite)" in err
    assert len(err.splitlines()) == 1
    code, _, _ = _run(capsys, "zoo", "export", "tiny-gpt", "--out", str(path), "--device", "h100",
                      "--microbatch-size", "4", "--dtype", "bfloat16", "--force")  # fmt: skip
    graph = OperatorGraph.load(path)
    assert code == 0 and graph.microbatch_size == 4 and "h100" in graph.source


@pytest.mark.parametrize(
    "argv",
    [
        ("zoo", "show", "resnet51"),
        ("zoo", "export", "resnet51", "--out", "never.json"),
        ("profile", "resnet51", "--out", "never.json"),
    ],
)
def test_bad_model_name_exits_2_with_one_line(
    argv: tuple[str, ...],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "unknown model 'resnet51'" in err
    assert not (tmp_path / "never.json").exists()


def test_bad_device_preset_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "export", "gpt2", "--out", "never.json", "--device", "tpu"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "'tpu'" in err


def test_profile_writes_a_measured_graph(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "m.json"
    argv = ["profile", "tiny-inception", "--device", "cpu", "--microbatch-size", "2"]
    argv += ["--repeats", "1", "--warmup", "0", "--threads", "1", "--out", str(path)]
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and "per microbatch of 2" in out
    graph = OperatorGraph.load(path)
    assert "measured on cpu" in graph.source and graph.microbatch_size == 2


def small_model() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """A factory for ``pipeenv profile package.module:function``."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    return model, (torch.randn(4, 8),)


def test_profile_a_model_of_ones_own(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "own.json"
    argv = ["profile", f"{__name__}:small_model", "--repeats", "1", "--warmup", "0"]
    code, out, err = _run(capsys, *argv, "--out", str(path))
    assert out.startswith("wrote ")
    assert code == 0, err
    graph = OperatorGraph.load(path)
    assert [n.id for n in graph.nodes] == ["input_1", "_0", "_1", "_2"]
    assert graph.microbatch_size == 4 and graph.total_param_bytes == (8 * 16 + 16 + 16 * 4 + 4) * 4
    assert graph.node("_0").extra["flops_fwd"] == 2 * 4 * 8 * 16


def test_profile_factory_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "profile", "no_such_module:f", "--out", "never.json")
    assert code == 2 and out == "" and "cannot load factory 'no_such_module:f'" in err
    code, out, err = _run(capsys, "profile", f"{__name__}:_not_a_factory", "--out", "never.json")
    assert code == 2 and "must return (module, tuple of tensors)" in err


def _not_a_factory() -> int:
    return 3
