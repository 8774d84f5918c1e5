"""The scaling section of `atcrl bench`: quick run writes complete, consistent rows and readable PNG plots."""

from __future__ import annotations

import json
import shutil

import matplotlib.image
import pytest
import tyro

from atcrl.bench.cli import BenchConfig, main, run_bench
from atcrl.bench.plots import PLOT_FILES, plot_report
from atcrl.bench.scaling import fast_flags
from atcrl.fastpath import FastPathConfig
from atcrl.train.pretrain import PretrainConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_scaling(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = run_bench(BenchConfig(only=("scaling",), quick=True, out=out, threads=1))
    return code, out, json.loads((out / "bench.json").read_text())


def test_quick_scaling_runs_every_part(quick_scaling):
    code, _, report = quick_scaling
    scaling = report["sections"]["scaling"]
    assert code == 0 and scaling["errors"] == {}, scaling.get("errors")
    assert list(report["sections"]) == ["scaling"]
    assert scaling["roofline"]["fp32"]["gflops"] > 0 and scaling["roofline"]["bf16"]["gflops"] > 0
    batches = set(scaling["batch_sizes"])
    assert {(r["variant"], r["arch"], r["batch"]) for r in scaling["encoder"]} == {
        (v, a, b) for v in ("fp32 eager", "fast path") for a in ("dmc", "atari") for b in batches}
    assert {(r["variant"], r["batch"]) for r in scaling["atc"]} == {
        (v, b) for v in ("fp32 eager", "fast path") for b in batches}
    atari = [r for r in scaling["envs"] if r["vector"]]
    assert sorted(r["num_envs"] for r in atari) == sorted(scaling["num_envs"])
    assert [r["spec"] for r in scaling["envs"] if not r["vector"]] == ["dmc:cartpole-swingup"]
    assert sorted(r["processes"] for r in scaling["ddp"]) == sorted(scaling["ddp_processes"])


def test_quick_scaling_rows_are_positive_and_consistent(quick_scaling):
    _, _, report = quick_scaling
    s = report["sections"]["scaling"]
    peaks = {p: s["roofline"][p]["gflops"] for p in ("fp32", "bf16")}
    for row in s["encoder"] + s["atc"]:
        assert row["per_s"] > 0 and row["gflops"] > 0 and row["ratio_vs_eager"] > 0
        for p, peak in peaks.items():
            assert row[f"{p}_roofline_fraction"] == pytest.approx(row["gflops"] / peak)
        if row["variant"] == "fp32 eager":
            assert row["ratio_vs_eager"] == 1.0
    for row in s["encoder"]:
        assert row["gflops"] == pytest.approx(s["flops_per_image"][row["arch"]] * row["per_s"] / 1e9)
    for row in s["atc"]:
        assert row["updates_per_s"] == row["per_s"]
        assert row["images_per_s"] == pytest.approx(2 * row["batch"] * row["per_s"])
    for row in s["envs"]:
        assert row["agent_steps_per_s"] > 0 and row["env_threads"] >= 1 and row["speedup"] > 0
        assert row["env_steps_per_s"] == pytest.approx(row["agent_steps_per_s"] * row["action_repeat"])
    assert min(s["envs"], key=lambda r: (not r["vector"], r["num_envs"]))["speedup"] == 1.0
    for row in s["ddp"]:
        assert row["updates_per_s"] >= row["updates_per_s_median"] > 0 and row["windows"] >= 1
        assert row["per_process_batch"] * row["processes"] == row["global_batch"]
        assert row["images_per_s"] == pytest.approx(2 * row["global_batch"] * row["updates_per_s"])
        assert row["speedup"] > 0 and row["threads_per_process"] == 1
    assert next(r for r in s["ddp"] if r["processes"] == s["ddp_processes"][0])["speedup"] == 1.0


def test_quick_scaling_markdown_has_every_table(quick_scaling):
    _, out, report = quick_scaling
    markdown = (out / "bench.md").read_text()
    assert "## scaling\n" in markdown and "FAILED" not in markdown
    for heading in ("Encoder training", "ATC pretraining", "env steps", "Offline ATC pretraining"):
        assert heading in markdown
    scaling = report["sections"]["scaling"]
    # One encoder row per batch size, both variants in it.
    assert markdown.count("| dmc | ") == len(scaling["batch_sizes"])
    assert markdown.count("| atari:Pong | ") == len(scaling["num_envs"])


def test_plots_are_real_pngs(quick_scaling):
    _, out, _ = quick_scaling
    for name in PLOT_FILES:
        path = out / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
        assert image[..., :3].std() > 0.05  # something is drawn on the white canvas


def test_plot_only_redraws_from_bench_json_without_measuring(quick_scaling, tmp_path):
    _, out, _ = quick_scaling
    shutil.copy(out / "bench.json", tmp_path / "bench.json")
    before = (tmp_path / "bench.json").read_bytes()
    assert main(["--plot-only", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(PLOT_FILES)
    assert (tmp_path / "bench.json").read_bytes() == before
    for name in PLOT_FILES:
        assert matplotlib.image.imread(tmp_path / name).shape == matplotlib.image.imread(out / name).shape


def test_plot_only_errors_and_sections_without_plots(tmp_path):
    assert run_bench(BenchConfig(plot_only=tmp_path)) == 2  # no bench.json
    (tmp_path / "bench.json").write_text("{not json")
    assert run_bench(BenchConfig(plot_only=tmp_path)) == 2
    report = {"sections": {"scaling": {"error": "RuntimeError: boom"}, "envs": {"rows": []}}}
    assert plot_report(report, tmp_path) == [] and not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("bad, match", [
    ({"scaling_batch_sizes": (1, 32)}, "scaling_batch_sizes"),
    ({"scaling_batch_sizes": ()}, "scaling_batch_sizes"),
    ({"scaling_num_envs": (0,)}, "scaling_num_envs"),
    ({"scaling_ddp_processes": ()}, "scaling_ddp_processes"),
    ({"scaling_ddp_processes": (1, 3)}, "split evenly"),
    ({"scaling_ddp_batch_size": 1}, "scaling_ddp_batch_size"),
    ({"scaling_ddp_updates": 3}, "scaling_ddp_updates"),
    ({"only": ("scaling,scale",)}, "unknown bench section"),
])
def test_bad_scaling_options_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        BenchConfig(**bad)


def test_scaling_options_parse_from_the_command_line(tmp_path):
    cfg = tyro.cli(BenchConfig, args=["--only", "scaling", "--scaling-batch-sizes", "64", "128",
                                      "--scaling-num-envs", "4", "--scaling-ddp-processes", "1", "2",
                                      "--out", str(tmp_path)])
    assert cfg.sections == ("scaling",) and cfg.scaling_batch_sizes == (64, 128)
    assert cfg.scaling_num_envs == (4,) and cfg.scaling_ddp_processes == (1, 2)


@pytest.mark.parametrize("fast", [FastPathConfig.fp32_eager(1), FastPathConfig(threads=2),
                                  FastPathConfig(bf16=True, compile=True, tune_allocator=False)])
def test_fast_flags_reproduce_the_config_in_atcrl_pretrain(fast):
    parsed = tyro.cli(PretrainConfig, args=["--data", "somewhere", *fast_flags(fast)])
    assert parsed.fast == fast
