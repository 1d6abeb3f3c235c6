"""lablib.methods.distributed: the simulated collectives against their definitions (the ring
all-reduce equals the direct sum for random shapes and rank counts, values and gradients), the
ring's traffic, ZeRO's memory arithmetic against hand-computed numbers, model_state_bytes on a
real model with Adam; and the lab's training script, launched for real on 2 ranks (DDP and FSDP2
end equal, FSDP2 holds half the state per rank, a DCP checkpoint saved on 2 ranks loads on 1)."""

import json
import math
import runpy
from pathlib import Path

import pytest
import torch
from torch import nn

from lablib.core import compat, launch
from lablib.methods import distributed

SCRIPT = Path(__file__).resolve().parent.parent / "labs" / "15_distributed" / "train_dist.py"


def _ranks(n, shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=dtype) for _ in range(n)]


# --- collectives -----------------------------------------------------------------------------------

def test_allreduce_sum_gives_every_rank_its_own_copy_of_the_sum_and_leaves_the_inputs():
    ts = [torch.tensor([1.0, 2.0]), torch.tensor([10.0, 20.0]), torch.tensor([100.0, 200.0])]
    before = [t.clone() for t in ts]
    out = distributed.allreduce_sum(ts)
    assert len(out) == 3 and all(torch.equal(o, torch.tensor([111.0, 222.0])) for o in out)
    out[0][0] = -1  # one rank's copy is its own
    assert out[1][0] == 111 and all(torch.equal(a, b) for a, b in zip(ts, before, strict=True))


def test_reduce_scatter_gives_rank_r_chunk_r_of_the_sum_also_when_uneven():
    ts = [torch.arange(7.0), 10 * torch.arange(7.0)]  # sum: 0, 11, 22, ..., 66
    out = distributed.reduce_scatter_sum(ts)
    assert [o.tolist() for o in out] == [[0.0, 11.0, 22.0, 33.0], [44.0, 55.0, 66.0]]
    few = distributed.reduce_scatter_sum([torch.ones(2)] * 3)  # fewer elements than ranks
    assert [o.tolist() for o in few] == [[3.0], [3.0], []]


@pytest.mark.parametrize("n, shape", [(1, (3,)), (2, (5, 4)), (3, (7,)), (4, (2, 3, 5)), (5, (3,)), (8, (1,)), (6, ())])
def test_ring_allreduce_equals_the_direct_sum(n, shape):
    ts = _ranks(n, shape, seed=n)
    ring, direct = distributed.ring_allreduce(ts), distributed.allreduce_sum(ts)
    assert len(ring) == n
    for r, d in zip(ring, direct, strict=True):
        assert r.shape == torch.Size(shape) and torch.allclose(r, d, atol=1e-12)


def test_ring_allreduce_of_integers_is_exact_and_of_floats_only_reorders_the_additions():
    ints = [torch.randint(-1000, 1000, (11,), generator=torch.Generator().manual_seed(s)) for s in range(4)]
    assert all(torch.equal(r, d) for r, d in zip(distributed.ring_allreduce(ints), distributed.allreduce_sum(ints), strict=True))
    floats = _ranks(5, (40,), seed=9, dtype=torch.float32)
    gap = max((r - d).abs().max().item() for r, d in
              zip(distributed.ring_allreduce(floats), distributed.allreduce_sum(floats), strict=True))
    assert gap < 1e-5  # float addition is not associative: the last bits may differ


def test_ring_allreduce_carries_the_gradient_of_a_sum():
    ts = [t.requires_grad_() for t in _ranks(3, (4,), seed=2)]
    weights = _ranks(3, (4,), seed=3)
    sum(((o * w).sum() for o, w in zip(distributed.ring_allreduce(ts), weights, strict=True))).backward()
    for t in ts:  # every input reaches every output once: d/dt_i = sum of the weights
        assert torch.allclose(t.grad, sum(weights), atol=1e-12)


def test_ring_traffic_is_two_n_minus_one_over_n_of_the_bytes():
    assert distributed.ring_traffic(1, 1000) == 0
    assert distributed.ring_traffic(2, 1000) == 1000
    assert distributed.ring_traffic(4, 1000) == 1500
    assert distributed.ring_traffic(1000, 1000) == pytest.approx(1998)


def test_average_gradients_is_the_mean_over_ranks_on_every_rank():
    g = [{"w": torch.full((2, 2), float(r)), "b": torch.tensor([r * 2.0])} for r in range(4)]
    out = distributed.average_gradients(g)
    assert len(out) == 4
    for d in out:
        assert torch.equal(d["w"], torch.full((2, 2), 1.5)) and torch.equal(d["b"], torch.tensor([3.0]))


@pytest.mark.parametrize("call, name", [
    (lambda: distributed.allreduce_sum(torch.ones(3)), "tensors"),
    (lambda: distributed.allreduce_sum([]), "tensors"),
    (lambda: distributed.allreduce_sum([torch.ones(3), [1.0, 1.0, 1.0]]), "tensors"),
    (lambda: distributed.ring_allreduce([torch.ones(3), torch.ones(4)]), "tensors"),
    (lambda: distributed.ring_allreduce([torch.ones(3), torch.ones(3, dtype=torch.float64)]), "tensors"),
    (lambda: distributed.reduce_scatter_sum([torch.ones(2, dtype=torch.bool)]), "tensors"),
    (lambda: distributed.ring_traffic(0, 10), "n_ranks"),
    (lambda: distributed.ring_traffic(2.0, 10), "n_ranks"),
    (lambda: distributed.ring_traffic(2, -1), "n_bytes"),
    (lambda: distributed.ring_traffic(2, math.nan), "n_bytes"),
    (lambda: distributed.average_gradients([]), "grads"),
    (lambda: distributed.average_gradients([{"w": torch.ones(1)}, {"v": torch.ones(1)}]), "grads"),
    (lambda: distributed.average_gradients([{"w": 1.0}]), "grads"),
    (lambda: distributed.average_gradients([{"w": torch.ones(2)}, {"w": torch.ones(3)}]), "grads"),
    (lambda: distributed.average_gradients([{"w": torch.ones(2)}, {"w": torch.ones(2, dtype=torch.int64)}]), "grads"),
])
def test_collectives_refuse_bad_input_naming_the_argument(call, name):
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}"):
        call()


# --- ZeRO arithmetic ------------------------------------------------------------------------------

def test_zero_bytes_match_the_hand_computed_numbers():
    # 1,000 parameters on 4 ranks, fp32 Adam (4 + 4 + 8 bytes each)
    assert distributed.zero_bytes(1000, 4, 0) == {"params": 4000, "grads": 4000, "optimizer": 8000, "total": 16000}
    assert distributed.zero_bytes(1000, 4, 1) == {"params": 4000, "grads": 4000, "optimizer": 2000, "total": 10000}
    assert distributed.zero_bytes(1000, 4, 2) == {"params": 4000, "grads": 1000, "optimizer": 2000, "total": 7000}
    assert distributed.zero_bytes(1000, 4, 3) == {"params": 1000, "grads": 1000, "optimizer": 2000, "total": 4000}
    # the ZeRO paper's example: 7.5 B parameters, 64 ranks, mixed-precision Adam (2 + 2 + 12 bytes)
    big = 7_500_000_000
    assert distributed.zero_bytes(big, 64, 0, precision=distributed.MIXED_ADAM)["total"] == 16 * big  # 120 GB
    stage1 = distributed.zero_bytes(big, 64, 1, precision=distributed.MIXED_ADAM)["total"]
    assert stage1 == pytest.approx(4 * big + 12 * big / 64, rel=1e-9)  # 31.4 GB in the paper
    stage3 = distributed.zero_bytes(big, 64, 3, precision=distributed.MIXED_ADAM)["total"]
    assert stage3 == pytest.approx(16 * big / 64, rel=1e-9)  # 1.9 GB in the paper
    # an uneven split: each rank holds ceil(10 / 4) = 3 elements of a sharded part
    assert distributed.zero_bytes(10, 4, 3)["params"] == 12


def test_zero_saving_of_stage_three_is_one_minus_one_over_n():
    for n in (1, 2, 4, 5, 8, 64):
        assert distributed.zero_saving(100_000_000_000, n, 3) == pytest.approx(1 - 1 / n, abs=1e-9)
    assert distributed.zero_saving(100_000_000_000, 5, 3) == pytest.approx(0.8)
    assert distributed.zero_saving(1000, 4, 0) == 0
    # stage 1 with mixed precision shards only 12 of the 16 bytes: it can never save 80 %
    assert distributed.zero_saving(10**12, 10**6, 1, precision=distributed.MIXED_ADAM) < 0.75


def test_precision_totals_and_refuses_negative_bytes():
    assert distributed.FP32_ADAM.total == distributed.MIXED_ADAM.total == 16
    with pytest.raises(ValueError, match="params"):
        distributed.Precision("bad", -1, 4, 8)
    with pytest.raises(ValueError, match="optimizer"):
        distributed.Precision("bad", 4, 4, math.inf)
    with pytest.raises(TypeError, match="name"):
        distributed.Precision(None, 4, 4, 8)


@pytest.mark.parametrize("kwargs, name", [
    (dict(n_params=0), "n_params"), (dict(n_params=1.5), "n_params"), (dict(n_params=True), "n_params"),
    (dict(n_ranks=0), "n_ranks"), (dict(n_ranks="2"), "n_ranks"),
    (dict(stage=4), "stage"), (dict(stage=-1), "stage"), (dict(stage=2.0), "stage"),
    (dict(precision="fp32"), "precision"),
])
def test_zero_bytes_refuses_bad_input_naming_the_argument(kwargs, name):
    args = dict(n_params=100, n_ranks=2, stage=1) | kwargs
    precision = args.pop("precision", distributed.FP32_ADAM)
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
        distributed.zero_bytes(**args, precision=precision)


def test_model_state_bytes_counts_params_grads_and_adam_state_after_a_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3), nn.BatchNorm1d(3))
    n = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters())
    assert distributed.model_state_bytes(model, opt) == {"params": 4 * n, "grads": 0, "optimizer": 0, "total": 4 * n}
    model(torch.randn(4, 5)).sum().backward()
    opt.step()
    got = distributed.model_state_bytes(model, opt)
    assert got == {"params": 4 * n, "grads": 4 * n, "optimizer": 8 * n, "total": 16 * n}  # buffers, step counters left out
    assert got == distributed.zero_bytes(n, 1, 0)  # one rank: what ZeRO's arithmetic says
    assert distributed.model_state_bytes(model)["optimizer"] == 0


def test_model_state_bytes_counts_a_tied_weight_once_and_a_sharded_one_by_its_local_part():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    b.weight = a.weight
    assert distributed.model_state_bytes(nn.Sequential(a, b))["params"] == 16 * 4

    class Shard(torch.Tensor):  # what a DTensor says: a global shape, and the local piece this rank keeps
        def to_local(self):
            return self[:2]

    model = nn.Linear(4, 4, bias=False)
    model.weight = nn.Parameter(model.weight.detach().as_subclass(Shard))
    assert distributed.model_state_bytes(model)["params"] == 2 * 4 * 4


def test_model_state_bytes_refuses_what_is_not_a_model_or_an_optimizer():
    with pytest.raises(TypeError, match="model"):
        distributed.model_state_bytes({"w": torch.ones(1)})
    with pytest.raises(TypeError, match="optimizer"):
        distributed.model_state_bytes(nn.Linear(2, 2), optimizer={"lr": 1e-3})


def test_max_difference_is_zero_for_equal_states_and_the_largest_gap_otherwise():
    a = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
    b = {"w": torch.tensor([[0.0, 0.5], [0.0, 0.0]]), "b": torch.tensor([0.0, -2.0])}
    assert distributed.max_difference(a, a) == 0.0
    assert distributed.max_difference(a, b) == 2.0
    assert math.isnan(distributed.max_difference(a, {"w": torch.full((2, 2), math.nan), "b": torch.zeros(2)}))
    torch.manual_seed(0)
    m = nn.Linear(3, 2)
    assert distributed.max_difference(m, {k: v.clone() for k, v in m.state_dict().items()}) == 0.0
    with pytest.raises(ValueError, match="keys"):
        distributed.max_difference(a, {"w": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="shape"):
        distributed.max_difference(a, {"w": torch.zeros(2, 3), "b": torch.zeros(2)})
    with pytest.raises(TypeError, match=r"\ba\b"):
        distributed.max_difference([1.0], a)
    with pytest.raises(ValueError, match=r"\ba\b"):
        distributed.max_difference({}, {})


def test_compat_fsdp2_gives_fully_shard_and_the_mixed_precision_policy():
    fully_shard, policy = compat.fsdp2()
    assert callable(fully_shard) and policy(param_dtype=torch.bfloat16).param_dtype == torch.bfloat16


# --- the lab's script, for real --------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One 2-rank launch of the script, every mode, a DCP checkpoint of the fsdp mode (the digits
    loaded from scikit-learn); then the checkpoint loaded by a 1-rank run (the digits from --data).
    Shared by the tests below."""
    root = tmp_path_factory.mktemp("project")
    (root / "labs").mkdir()
    (root / "pyproject.toml").write_text("")
    out, dcp = root / "data" / "run", root / "data" / "dcp"
    common = ("--steps", 4, "--warmup", 1, "--batch", 16, "--hidden", 32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAB_ROOT", str(root))
        run = launch.torchrun(SCRIPT, "--mode", "single,manual,ddp,fsdp", *common, "--out", out, "--save-dcp", dcp,
                              nproc=2, timeout_s=240, echo=False, cwd=root)
        digits = runpy.run_path(str(SCRIPT))["save_digits"](root / "data" / "digits.pt")  # --data: the same digits, prepared once
        one = launch.torchrun(SCRIPT, "--mode", "single", "--steps", 0, *common[2:], "--out", root / "data" / "one",
                              "--load-dcp", dcp, "--data", digits, nproc=1, timeout_s=240, echo=False, cwd=root)
    return root, run, one


def _params(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_script_trains_every_mode_to_the_same_parameters(two_ranks):
    root, run, _ = two_ranks
    summary = json.loads((root / "data" / "run" / "summary.json").read_text())
    assert summary["world"] == 2 and summary["backend"] == "gloo" and summary["allreduce"] == [3.0, 3.0]
    params = {m: _params(root / "data" / "run" / f"{m}.safetensors") for m in ("single", "manual", "ddp", "fsdp")}
    assert distributed.max_difference(params["manual"], params["ddp"]) == 0.0
    assert distributed.max_difference(params["ddp"], params["fsdp"]) == 0.0
    assert distributed.max_difference(params["single"], params["ddp"]) < 1e-5  # summed in another order
    assert max(abs(a - b) for a, b in zip(summary["modes"]["single"]["loss"], summary["modes"]["ddp"]["loss"], strict=True)) < 1e-5
    assert "rank 1/2" in run.output and "all_reduce of 2 gave 3" in run.output


def test_fsdp_holds_half_the_state_per_rank_that_ddp_holds(two_ranks):
    root, _, _ = two_ranks
    modes = json.loads((root / "data" / "run" / "summary.json").read_text())["modes"]
    n = modes["ddp"]["n_params"]
    for r in range(2):
        assert modes["ddp"]["per_rank"][r]["state_bytes"] == distributed.zero_bytes(n, 2, 0)
        assert modes["fsdp"]["per_rank"][r]["state_bytes"] == distributed.zero_bytes(n, 2, 3)  # 32 and 10 rows split evenly
    assert modes["manual"]["per_rank"][0]["allreduce_ms"] > 0 and modes["ddp"]["per_rank"][0]["allreduce_ms"] is None


def test_a_checkpoint_saved_by_two_ranks_loads_into_one_process(two_ranks):
    root, _, one = two_ranks
    assert sorted(p.name for p in (root / "data" / "dcp").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    loaded = _params(root / "data" / "one" / "single.safetensors")  # --steps 0: the checkpoint as loaded
    assert distributed.max_difference(loaded, _params(root / "data" / "run" / "fsdp.safetensors")) == 0.0
    assert one.returncode == 0


def _parse(*argv):
    return runpy.run_path(str(SCRIPT))["parse_args"](list(argv))


@pytest.mark.parametrize("argv, says", [
    (("--mode", "zero3", "--out", "data/x"), "--mode"),
    (("--steps", "-1", "--out", "data/x"), "--steps"),
    (("--out", "/elsewhere/x"), "--out"),
    (("--out", "data/x", "--load-dcp", "data/nothing"), "--load-dcp"),
    (("--out", "data/x", "--data", "data/missing.pt"), "--data"),
])
def test_script_refuses_bad_arguments_with_a_clear_message(argv, says, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("")
    with pytest.raises(SystemExit) as stop:
        _parse(*argv)
    assert stop.value.code == 2 and says in capsys.readouterr().err


def test_script_refuses_to_save_a_checkpoint_over_old_shards(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    old = tmp_path / "data" / "dcp"
    old.mkdir(parents=True)
    (old / "__3_0.distcp").write_text("")
    with pytest.raises(SystemExit):
        _parse("--out", "data/x", "--save-dcp", "data/dcp")
    assert "not empty" in capsys.readouterr().err


# --- DeepSpeed ZeRO-3 (installed by `make deepspeed`, which `make test` runs first) -----------------

DS_SCRIPT = SCRIPT.with_name("train_deepspeed.py")


def test_deepspeed_script_reads_without_deepspeed_and_asks_for_a_fair_zero3_config():
    """The notebook reads the script's functions in its own process: that must not import DeepSpeed."""
    config = runpy.run_path(str(DS_SCRIPT))["zero3_config"](64)
    assert config["train_batch_size"] == 64 and config["zero_optimization"]["stage"] == 3
    assert config["gradient_clipping"] == 0.0  # DeepSpeed's default clips at 1.0: another optimizer than Adam
    assert config["zero_optimization"]["stage3_param_persistence_threshold"] == 0  # every tensor partitioned


def test_deepspeed_zero3_holds_half_the_state_per_rank_and_trains_as_plain_adam(tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed: make deepspeed")
    root = tmp_path / "project"
    (root / "labs").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    out = root / "data" / "ds"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAB_ROOT", str(root))
        run = launch.torchrun(DS_SCRIPT, "--steps", 4, "--warmup", 1, "--batch", 16, "--hidden", 32, "--out", out,
                              nproc=2, timeout_s=240, echo=False, cwd=root,
                              env={"DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""})
    summary = json.loads((out / "deepspeed.json").read_text())
    assert summary["world"] == 2 and summary["backend"] == "gloo" and summary["accelerator"] == "cpu"
    n = summary["n_params"]
    for r in summary["per_rank"]:  # 32 and 10 rows split evenly over 2 ranks: exactly the ZeRO-3 formula
        assert r["state_bytes"] == distributed.zero_bytes(n, 2, 3)
    assert summary["max_diff_vs_single"] < 1e-5
    assert _params(out / "deepspeed.safetensors").keys() == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}
    assert "deepspeed ZeRO-3 on 2 rank(s)" in run.output
    assert not (root / "data" / "cache" / "torch_extensions" / "deepspeed_shm_comm").exists()  # nothing compiled
