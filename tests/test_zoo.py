"""The model zoo: registry, exact parameter counts, shipped graphs, traces, losses, profiling."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pipeenv import zoo
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.zoo.costs import DTYPE_BYTES

torch.set_num_threads(1)

# Published parameter counts, and which convention each follows (see the model docstrings).
PARAMS = {
    "tiny-gpt": 3_323_392,  # ours: 4 blocks of width 256, tied embeddings
    "tiny-inception": 92_170,  # ours: 3 cells
    "resnet50": 25_557_032,  # torchvision
    "vgg16": 138_357_544,  # Simonyan & Zisserman, torchvision
    "inception_v3": 23_834_568,  # torchvision 27,161,264 minus the 3,326,696 of the aux head
    "densenet121": 7_978_856,  # torchvision
    "gpt2": 124_439_808,  # HuggingFace, tied embeddings
    "gpt2-medium": 354_823_168,  # HuggingFace, tied embeddings
    "gpt2-xl": 1_557_611_200,  # HuggingFace, tied embeddings
    "bert_large": 335_141_888 + 2_050,  # HuggingFace bert-large-uncased + 2-way classifier
    "vit_b16": 86_567_656,  # torchvision vit_b_16
    "gnmt": 160_671_297 + 33_095_680,  # MLPerf GNMT (shared embedding) + a separate one
    "llama-7b": 6_738_415_616,  # Llama-2-7B release
}
NOT_CHAINS = sorted(set(PARAMS) - {"vgg16"})


def test_every_model_is_listed_with_a_shipped_graph() -> None:
    assert zoo.names() == list(PARAMS)
    for name in zoo.names():
        assert (zoo.DATA_DIR / f"{name}.json").is_file()


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_is_exact(name: str) -> None:
    model = zoo.build_model(name, "meta")
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name] == zoo.spec(name).params


@pytest.mark.parametrize("name", list(PARAMS))
def test_shipped_graph_validates_and_counts_every_parameter_once(name: str) -> None:
    graph = OperatorGraph.load(zoo.DATA_DIR / f"{name}.json")
    model_spec = zoo.spec(name)
    assert graph.name == name and graph.microbatch_size == model_spec.microbatch_size
    assert graph.total_param_bytes == PARAMS[name] * DTYPE_BYTES[model_spec.dtype]
    assert "a100" in graph.source
    inputs = [n for n in graph.nodes if n.op == "input"]
    assert [n.id for n in inputs] == [i.name for i in model_spec.inputs]
    assert all(n.forward_s == 0 and n.param_bytes == 0 for n in inputs)
    assert all(n.forward_s >= 0 and n.backward_s >= 0 for n in graph.nodes)
    assert graph.total_compute_s > 0
    assert zoo.info(name)["params"] == PARAMS[name]


@pytest.mark.parametrize("name", NOT_CHAINS)
def test_models_with_branches_or_skips_are_not_chains(name: str) -> None:
    assert not zoo.load(name).is_chain


@pytest.mark.parametrize(
    ("name", "joins", "widest"),
    [
        ("inception_v3", 15, 4),  # 11 cells, 4 branches (3 in the reductions), 2 inner E cats
        ("densenet121", 62, 25),  # 58 layer cats + 4 block cats; block 3 joins 1 + 24 inputs
        ("resnet50", 16, 2),  # one residual add per bottleneck
        ("tiny-inception", 3, 4),
    ],
)
def test_branches_and_skips_join_where_the_architecture_says(
    name: str, joins: int, widest: int
) -> None:
    graph = zoo.load(name)
    in_degree = graph.to_networkx().in_degree
    degrees = [in_degree(n.id) for n in graph.nodes if n.op in ("cat", "add")]
    assert len(degrees) == joins and max(degrees) == widest


def test_vgg16_is_a_chain() -> None:
    assert zoo.load("vgg16").is_chain


@pytest.mark.parametrize("name", list(PARAMS))  # about 15 s in all, gnmt 5 s of it
def test_regenerating_gives_the_shipped_graph(name: str, tmp_path: Path) -> None:
    (path,) = zoo.regenerate([name], tmp_path)
    assert path.read_text() == (zoo.DATA_DIR / f"{name}.json").read_text()


@pytest.mark.parametrize("name", ["resnet50", "gpt2"])
def test_node_ids_are_stable_across_two_traces(name: str) -> None:
    first = zoo.analytic_graph(name, microbatch_size=1)
    second = zoo.analytic_graph(name, microbatch_size=1)
    assert first.to_dict() == second.to_dict()
    assert [n.id for n in first.nodes] == [n.id for n in zoo.load(name).nodes]
    assert first.edges == zoo.load(name).edges


def test_load_default_config_reads_the_shipped_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> OperatorGraph:
        raise AssertionError("the default configuration must not be traced")

    monkeypatch.setattr(zoo, "analytic_graph", refuse)
    assert (
        zoo.load("llama-7b").to_dict()
        == OperatorGraph.load(zoo.DATA_DIR / "llama-7b.json").to_dict()
    )
    h100 = zoo.load("gpt2", "h100")
    assert "h100" in h100.source
    assert h100.total_compute_s < zoo.load("gpt2").total_compute_s


def test_load_other_device_equals_tracing_for_it() -> None:
    assert (
        zoo.load("tiny-gpt", "h200").to_dict() == zoo.analytic_graph("tiny-gpt", "h200").to_dict()
    )


def test_load_other_microbatch_and_dtype_traces() -> None:
    graph = zoo.load("tiny-gpt", microbatch_size=2, dtype="bfloat16")
    assert graph.microbatch_size == 2
    assert graph.node("ids").output_bytes == 2 * 128 * 8  # int64 token ids
    assert graph.node("h_0_fc").output_bytes == 2 * 128 * 1024 * 2
    assert graph.total_param_bytes == PARAMS["tiny-gpt"] * 2


def test_tied_lm_head_owns_no_parameter_but_names_the_shared_one() -> None:
    head = zoo.load("gpt2").node("lm_head")
    assert head.param_bytes == 0
    assert head.extra["tied_params"] == ["embed.tokens.weight"]
    # The backward still computes the tied weight's gradient: twice the forward FLOPs.
    assert head.extra["flops_bwd"] == 2 * head.extra["flops_fwd"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: zoo.load("resnet51"), "unknown model 'resnet51'"),
        (lambda: zoo.load("gpt2", "tpu"), "unknown preset 'tpu'"),
        (lambda: zoo.load("gpt2", dtype="float64"), "unknown dtype 'float64'"),
        (lambda: zoo.load("gpt2", microbatch_size=0), "microbatch_size must be an integer >= 1"),
        (lambda: zoo.load("gpt2", "v100", dtype="bfloat16"), "dtype .bfloat16. is not supported"),
        (lambda: zoo.profile("tiny-gpt", "tpu"), "device must be cpu or cuda"),
    ],
)
def test_bad_arguments_raise_one_line_errors(call: object, message: str) -> None:
    with pytest.raises(PipeenvError, match=message) as err:
        call()  # type: ignore[operator]
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["tiny-gpt", "tiny-inception"])
def test_traced_graph_module_matches_the_graph_and_the_model(name: str) -> None:
    gm, graph = zoo.traced(name)
    fx_nodes = [n for n in gm.graph.nodes if n.op != "output"]
    assert [n.name for n in fx_nodes] == [n.id for n in graph.nodes]
    fx_edges = {(p.name, n.name) for n in fx_nodes for p in n.all_input_nodes}
    assert set(graph.edges) == fx_edges
    assert not any(n.op == "get_attr" for n in gm.graph.nodes)
    owned = sum(
        sum(p.numel() for p in gm.get_submodule(n.target).parameters())
        for n in fx_nodes
        if n.op == "call_module"
    )
    assert owned == PARAMS[name]
    inputs = zoo.example_inputs(name, 2)
    model = zoo.build_model(name)
    assert torch.equal(gm(*inputs), model(*inputs))


@pytest.mark.parametrize("name", ["tiny-gpt", "tiny-inception"])
def test_loss_on_uniform_logits_is_log_classes(name: str) -> None:
    targets = zoo.example_targets(name, 2)
    model_spec = zoo.spec(name)
    assert targets.shape == (2, *model_spec.target_shape)
    logits = torch.zeros(*targets.shape, model_spec.classes)
    loss = zoo.loss_fn(name)(logits, targets)
    assert loss.item() == pytest.approx(math.log(model_spec.classes), rel=1e-6)
    output = zoo.build_model(name)(*zoo.example_inputs(name, 2))
    zoo.loss_fn(name)(output, targets).backward()


def test_example_inputs_are_seeded() -> None:
    first = zoo.example_inputs("tiny-inception", 2)
    assert torch.equal(first[0], zoo.example_inputs("tiny-inception", 2)[0])
    assert zoo.example_inputs("gnmt", 3, "meta")[1].shape == (3, 50)


def test_info_summarises_the_shipped_graph() -> None:
    summary = zoo.info("tiny-gpt")
    assert summary["nodes"] == 36 and summary["edges"] == 43
    assert summary["params"] == PARAMS["tiny-gpt"]
    assert summary["is_chain"] is False and summary["device"] == "a100"
    assert summary["inputs"] == {"ids": [8, 128]}


def test_profile_on_cpu_keeps_the_structure_and_measures_every_node() -> None:
    measured = zoo.profile("tiny-inception", "cpu", 2, repeats=1, warmup=0)
    analytic = zoo.load("tiny-inception", microbatch_size=2)
    assert measured.graph_hash == analytic.graph_hash
    assert "measured on cpu" in measured.source
    assert "inside whole forward and backward passes" in measured.source
    for node in measured.nodes:
        if node.op == "input":
            assert node.forward_s == 0 and node.backward_s == 0
        else:
            assert node.forward_s > 0 and node.backward_s > 0
        assert node.output_bytes == analytic.node(node.id).output_bytes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_profile_on_cuda() -> None:
    measured = zoo.profile("tiny-gpt", "cuda", 2, repeats=2, warmup=1)
    assert "measured on cuda" in measured.source
    assert all(n.forward_s > 0 for n in measured.nodes if n.op != "input")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_profile_on_absent_cuda_is_refused() -> None:
    with pytest.raises(PipeenvError, match="CUDA is not available"):
        zoo.profile("tiny-gpt", "cuda")


def test_regeneration_script_checks_the_shipped_files(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeenv.zoo.__main__ import main

    monkeypatch.setattr("sys.argv", ["python -m pipeenv.zoo", "--check", "tiny-inception"])
    assert main() == 0


class _DataDependent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else x


def test_profile_module_refuses_an_untraceable_model() -> None:
    with pytest.raises(PipeenvError, match="model 'dd' cannot be traced by torch.fx: symbolically"):
        zoo.profile_module(_DataDependent(), [torch.randn(2, 4)], "dd", repeats=1, warmup=0)


def test_a_plan_on_the_graph_lowers_onto_the_fx_module() -> None:
    """The contract the validator relies on: stage_of by node id splits the GraphModule."""
    from torch.fx.passes.split_module import split_module

    gm, graph = zoo.traced("tiny-gpt")
    half = len(graph.order) // 2
    stage_of = {node_id: int(i >= half) for i, node_id in enumerate(graph.order)}
    assert all(stage_of[u] <= stage_of[v] for u, v in graph.edges)
    stages = split_module(gm, gm, lambda node: stage_of[node.name])
    inputs = zoo.example_inputs("tiny-gpt", 2)
    output = stages(*inputs)
    assert torch.equal(output, gm(*inputs))
    loss = zoo.loss_fn("tiny-gpt")(output, zoo.example_targets("tiny-gpt", 2))
    loss.backward()
    assert gm.get_submodule("embed").tokens.weight.grad is not None


def test_tiny_gpt_starts_at_the_loss_of_a_uniform_guess() -> None:
    """GPT-2 initialisation (std 0.02) keeps the tied head's logits small: loss ~ ln(vocab)."""
    model = zoo.build_model("tiny-gpt")
    output = model(*zoo.example_inputs("tiny-gpt", 2))
    loss = zoo.loss_fn("tiny-gpt")(output, zoo.example_targets("tiny-gpt", 2))
    assert loss.item() == pytest.approx(math.log(512), abs=0.1)


def test_bfloat16_models_fall_back_to_float16_on_a_v100():
    graph = zoo.load("gpt2", device="v100")
    assert "float16" in graph.source and "bfloat16" not in graph.source
    a100 = zoo.load("gpt2")
    assert graph.total_param_bytes == a100.total_param_bytes  # same element size
    assert graph.total_compute_s > 2 * a100.total_compute_s  # 125 vs 312 TFLOP/s
    with pytest.raises(PipeenvError, match="dtype 'bfloat16' is not supported"):
        zoo.load("gpt2", device="v100", dtype="bfloat16")
