"""The fast path does what its switches say, changes results only within bf16 rounding, and the bench runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atcrl import cpus, fastpath, process
from atcrl.bench import compute
from atcrl.bench.agents import run_average_ul_updates
from atcrl.bench.cli import SECTIONS, BenchConfig, run_bench, spinning
from atcrl.bench.compute import matmul_gflops, training_flops
from atcrl.data.batches import PairBatch
from atcrl.fastpath import FastPathConfig
from atcrl.nets.encoders import ConvEncoder
from atcrl.ul.atc import ATC, ATCConfig
from atcrl.ul.optim import ULOptimConfig, make_ul_optimizer, ul_step

SHAPE = (9, 36, 36)


def _obs(batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _conv_inputs(module: nn.Module, run) -> list[torch.Tensor]:
    """The input tensor of every Conv2d call while ``run()`` executes."""
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(i[0])) for m in module.modules()
             if isinstance(m, nn.Conv2d)]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("channels_last", [True, False])
def test_prepare_module_sets_activation_layout_of_online_and_target_encoders(channels_last):
    objective = ATC(ConvEncoder("dmc", SHAPE), ATCConfig(batch_size=4))
    fastpath.prepare_module(objective, FastPathConfig(channels_last=channels_last))
    batch = PairBatch(_obs(), _obs(seed=1), torch.ones(4, dtype=torch.bool), torch.zeros(4, 1, 1),
                      torch.zeros(4, dtype=torch.long))
    inputs = _conv_inputs(objective, lambda: objective.loss(batch))
    assert len(inputs) == 8  # 4 online + 4 momentum-target convs
    for x in inputs:
        assert x.is_contiguous(memory_format=torch.channels_last) is channels_last
        assert x.is_contiguous() is not channels_last
    # Weights keep their layout either way, so checkpoints do not depend on the switch.
    assert all(p.is_contiguous() for p in objective.parameters())


def test_fp32_eager_is_plain_pytorch_bit_for_bit():
    cfg = FastPathConfig.fp32_eager()
    assert (cfg.bf16, cfg.channels_last, cfg.compile, cfg.tune_allocator) == (False, False, False, False)
    encoder = fastpath.prepare_module(ConvEncoder("dmc", SHAPE), cfg)
    obs = _obs()
    with fastpath.autocast("cpu", cfg):
        assert not torch.is_autocast_enabled("cpu")
        out = encoder(obs)
    x = obs.float() / 255.0
    for conv in encoder.convs:
        x = F.relu(F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding))
    assert out.dtype == torch.float32
    assert torch.equal(out, x)


@pytest.mark.parametrize("bf16", [True, False, None])
def test_autocast_dtype_follows_the_config(bf16):
    cfg = FastPathConfig(bf16=bf16)
    expected = fastpath.bf16_faster("cpu") if bf16 is None else bf16
    assert fastpath.use_bf16(cfg, "cpu") is expected
    encoder = ConvEncoder("dmc", SHAPE)
    with fastpath.autocast(torch.device("cpu"), cfg):
        assert torch.is_autocast_enabled("cpu") is expected
        if expected:
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        out = encoder(_obs())
    assert out.dtype == (torch.bfloat16 if expected else torch.float32)
    assert not torch.is_autocast_enabled("cpu")  # the context is left cleanly


def test_bf16_features_are_close_to_fp32():
    torch.manual_seed(0)
    encoder = ConvEncoder("dmc", SHAPE)
    obs = _obs(8)
    with torch.no_grad():
        reference = encoder(obs)
        with fastpath.autocast("cpu", FastPathConfig(bf16=True)):
            low = encoder(obs).float()
    # bf16 keeps 8 significand bits (unit roundoff 2^-8 ~ 0.4%); four conv layers measured ~0.7% relative
    # L2 error. 3% leaves room for other inputs while still catching a wrong scale or a dropped layer.
    assert (low - reference).norm() / reference.norm() < 0.03


def test_channels_last_changes_fp32_results_only_by_summation_order():
    torch.manual_seed(0)
    encoder = ConvEncoder("atari", (4, 84, 84))
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    fastpath.prepare_module(encoder, FastPathConfig.fp32_eager())
    plain = encoder(obs)
    fastpath.prepare_module(encoder, FastPathConfig())
    torch.testing.assert_close(encoder(obs), plain, rtol=1e-4, atol=1e-5)


def test_atc_under_bf16_scores_in_fp32_and_trains():
    torch.manual_seed(0)
    objective = ATC(ConvEncoder("dmc", SHAPE), ATCConfig(batch_size=8))
    cfg = FastPathConfig(bf16=True)
    fastpath.prepare_module(objective, cfg)
    optimizer, scheduler = make_ul_optimizer(objective, ULOptimConfig(warmup_updates=1, total_updates=10))
    batch = PairBatch(_obs(8), _obs(8, seed=1), torch.ones(8, dtype=torch.bool), torch.zeros(8, 1, 1),
                      torch.zeros(8, dtype=torch.long))
    with fastpath.autocast("cpu", cfg):
        loss, _ = objective.loss(batch)
    assert loss.dtype == torch.float32
    before = [p.detach().clone() for p in objective.encoder.parameters()]
    metrics = ul_step(objective, optimizer, scheduler, batch, 10.0, fast=cfg)
    assert {"ul/loss", "ul/accuracy", "ul/grad_norm", "ul/lr"} <= set(metrics)
    assert all(p.dtype == torch.float32 for p in objective.parameters())  # autocast never touches the weights
    assert any(not torch.equal(a, b) for a, b in zip(before, objective.encoder.parameters()))


def test_busy_cores_sees_a_spinning_process():
    with spinning(1):
        busy = cpus.busy_cores(0.5)
    assert busy is not None and 0.8 <= busy <= cpus.usable_cores() + 1e-6


def test_auto_threads_take_the_idle_cores(monkeypatch):
    monkeypatch.setattr(cpus, "_usable_cpus", lambda: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 0.0, 0.0))  # an old 1-minute average: not trusted
    torch.set_num_threads(2)  # conftest restores it
    monkeypatch.setattr(cpus, "busy_cores", lambda: 0.2)
    assert process.resolve_threads(0) == 2
    monkeypatch.setattr(cpus, "busy_cores", lambda: 0.7)
    assert process.resolve_threads(0) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two ranks share the two cores: one each, nothing measured
    monkeypatch.setattr(cpus, "busy_cores", lambda: pytest.fail("measured although the cap is 1"))
    assert process.resolve_threads(0) == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(cpus, "busy_cores", lambda: None)  # no /proc/stat: the load average decides
    assert process.resolve_threads(0) == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.0, 0.0))
    assert process.resolve_threads(0) == 2
    torch.set_num_threads(1)
    monkeypatch.setattr(cpus, "busy_cores", lambda: pytest.fail("measured although the cap is 1"))
    assert process.resolve_threads(0) == 1


def test_threads_and_config_validation(monkeypatch):
    assert process.resolve_threads(3) == 3
    assert 1 <= process.resolve_threads(0) <= cpus.usable_cores()
    assert process.resolve_threads(0) <= torch.get_num_threads()  # auto never raises a lowered count (conftest: 1)
    applied = process.configure_process(FastPathConfig(threads=1, tune_allocator=False))
    assert applied["threads"] == torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="threads"):
        FastPathConfig(threads=-1)
    monkeypatch.setenv(process.NO_MALLOC_TUNING_ENV, "1")
    assert process.tune_allocator() is False


_FAULTS = """
import resource, torch
from atcrl import process
from atcrl.nets.encoders import ConvEncoder
torch.set_num_threads(1)
encoder = ConvEncoder("dmc", (9, 84, 84))
obs = torch.randint(0, 256, (32, 9, 84, 84), dtype=torch.uint8)
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    encoder(obs).square().mean().backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
plain = [faults() for _ in range(4)]
tuned = process.tune_allocator()
after = [faults() for _ in range(8)]
# Steady state: the fewest faults of the last four steps (a step the kernel reclaimed idle pages in, as it
# may on a loaded machine, faults them back and says nothing about the allocator).
print(plain[-1], tuned, min(after[4:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator tuning is glibc-only")
def test_allocator_tuning_stops_fresh_page_faults_in_steady_state_training():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop(process.NO_MALLOC_TUNING_ENV, None)
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, env=env, check=True)
    plain, tuned, after = out.stdout.split()
    assert tuned == "True"
    # glibc's defaults hand the activations' pages back after each step and fault them in again (~4k per
    # step at batch 32, measured); tuned, the heap keeps them once the first steps have grown it.
    assert int(plain) > 1_000
    assert int(after) < 100


def test_training_flops_counts_forward_and_only_the_needed_backward_passes():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 8 * 8, 5))
    flops = training_flops(model, lambda: model(torch.zeros(2, 3, 10, 10)))
    conv_macs = 2 * 8 * 8 * 8 * 3 * 3 * 3  # batch x out elements x (in_channels x k x k)
    linear_macs = 2 * 5 * 8 * 8 * 8
    # The conv reads the data (no input gradient): forward + weight grad. The linear also needs its input grad.
    assert flops == 2 * conv_macs * 2 + 2 * linear_macs * 3


def test_roofline_matrices_stop_growing_before_a_product_gets_slow(monkeypatch):
    assert matmul_gflops("fp32", 512, reps=1)["n"] == 512
    assert matmul_gflops("fp32", 300, reps=1)["n"] == 256  # at most the n asked for
    monkeypatch.setattr(compute, "MATMUL_MAX_CALL_S", 0.0)  # every product is "too slow"
    result = matmul_gflops("bf16", 2048, reps=1)
    assert result["n"] == 256 and result["gflops"] > 0


def test_the_benchs_run_average_ppo_row_follows_the_ul_schedule():
    # PAPER: 6 UL updates per iteration decaying quadratically to 0 over 12,208 iterations: 1.98 on average.
    assert run_average_ul_updates("atari:Pong") == 2


def test_quick_bench_writes_json_and_markdown_for_every_section(tmp_path):
    code = run_bench(BenchConfig(quick=True, out=tmp_path))
    report = json.loads((tmp_path / "bench.json").read_text())
    assert code == 0, {k: v.get("error") for k, v in report["sections"].items()}
    assert set(report["sections"]) == set(SECTIONS)
    assert {"cpu", "cores", "torch", "bf16_native", "bf16_faster"} <= set(report["machine"])
    sections = report["sections"]
    threads = sections["threads"]["rows"]
    assert {r["spinning_processes"] for r in threads} == ({0, 1} if sections["threads"]["cores"] > 1 else {0})
    assert all(r["per_s"] > 0 for r in threads)
    assert sections["roofline"]["fp32"]["gflops"] > 0 and sections["roofline"]["bf16"]["gflops"] > 0
    eager = [r for r in sections["encoder"]["rows"] if r["variant"] == "fp32 eager"]
    assert {r["arch"] for r in eager} == {"dmc", "atari"}
    for row in sections["encoder"]["rows"]:
        assert row["per_s"] > 0 and 0 < row["roofline_fraction"] and row["ratio_vs_eager"] > 0
    assert all(r["ratio_vs_eager"] == 1.0 for r in eager)
    assert {r["variant"] for r in sections["atc"]["rows"]} == {"fp32 eager", "fast path"}
    assert set(sections["accuracy"]["variants"]) == {"fp32 eager", "fast path (default)", "bf16 forced"}
    assert sections["replay"]["pixels"]["bytes_per_100k"] > sections["replay"]["latents"]["bytes_per_100k"]
    assert all("error" not in r and r["steps_per_s"] > 0 for r in sections["agents"]["rows"])
    overlap = [r for r in sections["agents"]["rows"] if r["variant"] == "fast path + overlap"]
    assert {r["agent"] for r in overlap} == {"SAC decoupled", "SAC frozen"}
    assert all(r["overlap_env"] and r["ratio_vs_fast"] > 0 for r in overlap)
    markdown = (tmp_path / "bench.md").read_text()
    for name in SECTIONS:
        assert f"## {name}\n" in markdown
    assert "FAILED" not in markdown


def test_bench_rejects_unknown_sections():
    with pytest.raises(ValueError, match="unknown bench section"):
        BenchConfig(only=("encoder,gpu",))
    assert BenchConfig(only=("encoder,atc", "replay")).sections == ("encoder", "atc", "replay")
