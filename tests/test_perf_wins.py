"""Small speed-ups that must not change results: fused Adam, the moved-rows-only random shift, the skipped
clip pass, and the run records that report them (uint8-latent replay bytes, evaluation cap, summary)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import tyro
from test_train_cli import PPO_TINY as _PPO_TINY  # the shared tiny-run settings
from test_train_cli import SAC_TINY, SIZE

from atcrl import fastpath
from atcrl.cli import main as atcrl
from atcrl.data.batches import PairBatch, TransitionBatch
from atcrl.envs import make_env
from atcrl.fastpath import FastPathConfig, adam, adam_kwargs, clip_gradients
from atcrl.metrics_log import read_jsonl
from atcrl.nets.augment import random_shift
from atcrl.nets.encoders import ConvEncoder
from atcrl.rl.sac import SACAgent, SACConfig
from atcrl.train import train_session
from atcrl.train.evaluate import play
from atcrl.train.train_plan import TrainConfig, resolve
from atcrl.train.train_session import EpisodeCap, Session, build, describe_run
from atcrl.ul.atc import ATC, ATCConfig
from atcrl.ul.optim import ULOptimConfig, apply_ul_loss, make_ul_optimizer

SHAPE = (3, 36, 36)
FUSED = FastPathConfig(bf16=False, channels_last=False)  # the default optimizer kernels, fp32 everywhere else
EAGER = FastPathConfig.fp32_eager()
CPU_FUSED = fastpath.fused_adam_supported("cpu")


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _feed_gradients(params: list[torch.nn.Parameter], step: int) -> None:
    """The same gradients for two optimizers, whatever their weights have become."""
    g = torch.Generator().manual_seed(step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


# --------------------------------------------------------------------------- fused Adam


def test_adam_kwargs_ask_for_fused_only_where_the_config_and_torch_allow_it():
    params = list(_net().parameters())
    assert adam_kwargs(None, params) == {} and adam_kwargs(EAGER, params) == {}
    assert adam_kwargs(FUSED, params) == ({"fused": True} if CPU_FUSED else {})
    assert not fastpath.fused_adam_supported("meta")  # a device type without the kernel falls back
    assert adam_kwargs(FUSED, [torch.zeros(2, device="meta")]) == {}
    assert adam_kwargs(FUSED, [torch.zeros(2, dtype=torch.int64)]) == {}  # fused Adam is floating point only
    assert fastpath.describe(EAGER, "cpu")["fused_optim"] is False
    assert fastpath.describe(FUSED, "cpu")["fused_optim"] is CPU_FUSED


def test_fp32_eager_adam_is_torch_adam_bit_for_bit_and_fused_agrees_to_rounding():
    nets = {"torch": _net(), "eager": _net(), "fused": _net()}
    opts = {"torch": torch.optim.Adam(nets["torch"].parameters(), lr=1e-2),
            "eager": adam(nets["eager"].parameters(), EAGER, lr=1e-2),
            "fused": adam(nets["fused"].parameters(), FUSED, lr=1e-2)}
    assert opts["fused"].param_groups[0]["fused"] is (True if CPU_FUSED else None)
    for step in range(5):
        for name, opt in opts.items():
            _feed_gradients(list(nets[name].parameters()), step)
            opt.step()
    for a, b, c in zip(*(n.parameters() for n in nets.values())):
        assert torch.equal(a, b)
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-7)
    moved = [not torch.equal(a, b) for a, b in zip(nets["torch"].parameters(), _net().parameters())]
    assert all(moved)  # the comparison is between trained weights, not the initial ones


def _sac(fast: FastPathConfig | None, **cfg) -> SACAgent:
    torch.manual_seed(0)
    return SACAgent(ConvEncoder("dmc", SHAPE), 2, "end_to_end", SACConfig(hidden=(32,), latent_dim=8, **cfg), fast=fast)


def _transitions(seed: int = 0, batch: int = 8) -> TransitionBatch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (2, batch, *SHAPE), dtype=torch.uint8, generator=g)
    return TransitionBatch(obs=obs[0], action=torch.rand(batch, 2, generator=g) * 2 - 1,
                           reward=torch.rand(batch, generator=g), discount=torch.full((batch,), 0.99),
                           next_obs=obs[1], task=torch.zeros(batch, dtype=torch.long))


def test_sac_agents_use_the_fast_path_optimizers_and_their_checkpoints_load_either_way():
    eager, fused = _sac(EAGER), _sac(FUSED)
    for opt in (fused.critic_opt, fused.actor_opt, fused.alpha_opt):
        assert opt.param_groups[0]["fused"] is (True if CPU_FUSED else None)
    assert all(not opt.param_groups[0]["fused"] for opt in (eager.critic_opt, eager.actor_opt, eager.alpha_opt))
    torch.manual_seed(1)
    eager.update(eager.prepare(_transitions()))
    torch.manual_seed(1)
    fused.update(fused.prepare(_transitions()))
    # One update from the same weights: the critic's gradients are identical, so only the kernels' rounding differs.
    for (name, a), b in zip(eager.critic.named_parameters(), fused.critic.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=name)
    # Each loads the other's state and keeps its own kernel choice (torch would take the saved one's).
    eager_state, fused_state = eager.state_dict(), fused.state_dict()
    eager.load_state_dict(fused_state)
    fused.load_state_dict(eager_state)
    assert not eager.critic_opt.param_groups[0]["fused"]
    assert fused.critic_opt.param_groups[0]["fused"] is (True if CPU_FUSED else None)
    for i, p in enumerate(fused.critic_opt.param_groups[0]["params"]):
        assert torch.equal(fused.critic_opt.state[p]["exp_avg"], eager_state["critic_opt"]["state"][i]["exp_avg"])
    for agent in (eager, fused):
        metrics, _ = agent.update(agent.prepare(_transitions(seed=2)))
        assert math.isfinite(metrics["rl/critic_loss"])


@pytest.mark.parametrize("weight_decay", [0.0, 1e-4])
def test_make_ul_optimizer_is_fused_only_when_given_a_fast_path(weight_decay):
    atc = ATC(ConvEncoder("dmc", SHAPE), ATCConfig(batch_size=4))
    cfg = ULOptimConfig(warmup_updates=0, total_updates=10, weight_decay=weight_decay)
    plain, _ = make_ul_optimizer(atc, cfg)
    fused, _ = make_ul_optimizer(atc, cfg, fast=FUSED)
    assert all(not g["fused"] for g in plain.param_groups)
    assert all(g["fused"] is (True if CPU_FUSED else None) for g in fused.param_groups)
    assert [g["weight_decay"] for g in fused.param_groups] == [g["weight_decay"] for g in plain.param_groups]


# --------------------------------------------------------------------------- gradient clipping


def _old_random_shift(x: torch.Tensor, pad: int, prob: float, generator: torch.Generator) -> torch.Tensor:
    """The whole-batch algorithm random_shift used before: every row gathered, unmoved ones at shift 0."""
    B, C, H, W = x.shape
    shifts = torch.randint(0, 2 * pad + 1, (2, B), generator=generator) - pad
    if prob < 1:
        shifts = shifts * (torch.rand(B, generator=generator) < prob)
    rows = (torch.arange(H)[None, :] + shifts[0][:, None]).clamp(0, H - 1)
    cols = (torch.arange(W)[None, :] + shifts[1][:, None]).clamp(0, W - 1)
    return x[torch.arange(B)[:, None, None, None], torch.arange(C)[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :]]


@pytest.mark.parametrize("prob", [1e-9, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_shift_gathering_only_moved_rows_is_bit_identical_to_the_whole_batch_gather(prob, dtype):
    x = torch.randint(0, 256, (64, 4, 12, 10), generator=torch.Generator().manual_seed(0)).to(dtype)
    ours = random_shift(x, pad=3, prob=prob, generator=torch.Generator().manual_seed(7))
    reference = _old_random_shift(x, 3, prob, torch.Generator().manual_seed(7))
    assert ours.dtype == dtype and ours.is_contiguous() and ours.data_ptr() != x.data_ptr()
    assert torch.equal(ours, reference)
    unchanged = int((ours == x).flatten(1).all(1).sum())
    assert unchanged == 64 if prob < 1e-6 else unchanged < 64  # the draws really moved rows


@pytest.mark.cuda
@pytest.mark.parametrize("prob", [0.1, 0.5])
def test_random_shift_on_cuda_keeps_the_drawn_rows_without_a_sync(prob):
    from atcrl.nets.augment import _shift

    x = torch.randint(0, 256, (64, 4, 12, 10), generator=torch.Generator().manual_seed(0)).to(torch.uint8).cuda()
    torch.cuda.set_sync_debug_mode("error")  # picking the moved rows out (nonzero) would sync
    try:
        ours = random_shift(x, pad=3, prob=prob, generator=torch.Generator("cuda").manual_seed(7))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    g = torch.Generator("cuda").manual_seed(7)  # the same draws, in the same order
    shifts = torch.randint(0, 7, (2, 64), device="cuda", generator=g) - 3
    keep = torch.rand(64, device="cuda", generator=g) < prob
    reference = x.clone()
    reference[keep] = _shift(x[keep], shifts[:, keep])
    assert torch.equal(ours, reference) and 0 < int(keep.sum()) < 64


@pytest.mark.parametrize("max_norm", [0.0, 2.0, 10.0, 1e6])
def test_clip_gradients_is_clip_grad_norm_bit_for_bit(max_norm):
    def params():
        ps = [torch.nn.Parameter(torch.zeros(shape)) for shape in ((7, 5), (5,), (3,))]
        for p in ps:
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
        return ps

    ours, reference = params(), params()
    ours.append(torch.nn.Parameter(torch.zeros(2)))  # a parameter without a gradient is skipped
    norm = clip_gradients(ours, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(reference, max_norm if max_norm > 0 else float("inf"))
    assert torch.equal(norm, expected) and 2.0 < float(norm) < 10.0  # so 2 clips and 10 does not
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, reference)) and ours[-1].grad is None
    clipped = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ours[:-1]]))
    assert float(clipped) == pytest.approx(min(float(norm), max_norm) if max_norm > 0 else float(norm), rel=1e-5)


@pytest.mark.parametrize("grad_clip", [0.0, 1e-3, 1e3])
def test_apply_ul_loss_steps_exactly_like_clip_grad_norm(grad_clip):
    def make():
        torch.manual_seed(0)
        atc = ATC(ConvEncoder("dmc", SHAPE), ATCConfig(batch_size=4))
        return atc, make_ul_optimizer(atc, ULOptimConfig(warmup_updates=0, total_updates=10))[0]

    g = torch.Generator().manual_seed(3)
    obs = torch.randint(0, 256, (2, 4, *SHAPE), dtype=torch.uint8, generator=g)
    batch = PairBatch(obs[0], obs[1], torch.ones(4, dtype=torch.bool), torch.zeros(4, 1, 1),
                      torch.zeros(4, dtype=torch.long))
    (ours, ours_opt), (ref, ref_opt) = make(), make()
    norms = []
    for _ in range(2):
        torch.manual_seed(5)
        norms.append(apply_ul_loss(ours, ours_opt, None, ours.loss(batch)[0], grad_clip)["ul/grad_norm"])
        torch.manual_seed(5)
        ref_opt.zero_grad(set_to_none=True)
        ref.loss(batch)[0].backward()
        params = [p for group in ref_opt.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
        ref_opt.step()
        ref.after_update()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values()))
    assert 1e-3 < min(norms) and max(norms) < 1e3  # so 1e-3 clips every update and 1e3 none


@pytest.mark.parametrize("grad_clip", [0.0, 0.05])
def test_sac_clipping_through_the_shared_helper_matches_clip_grad_norm(grad_clip):
    ours, reference = _sac(None, grad_clip=grad_clip), _sac(None, grad_clip=grad_clip)

    def old_clip(opt, *, sync_free):
        params = [p for p in reference._params(opt) if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf)

    reference._clip = old_clip
    for agent in (ours, reference):
        torch.manual_seed(1)
        metrics, _ = agent.update(agent.prepare(_transitions()))
    assert (metrics["rl/critic_grad_norm"] > 0.05) and metrics["rl/actor_grad_norm"] > 0
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict()["modules"].values(),
                                                  reference.state_dict()["modules"].values()))


# --------------------------------------------------------------------------- bench rows


def test_the_replay_bench_reports_uint8_latents_next_to_float16_ones_and_pixels():
    from atcrl.bench.data import latent_replay, replay_memory

    r = replay_memory(600, batch_size=16, batches=2)
    pixels, half, quarter = (r[k]["bytes_per_100k"] for k in ("pixels", "latents", "latents_uint8"))
    assert r["latents_uint8"]["frame_dtype"] == "uint8" and r["latents"]["frame_dtype"] == "float16"
    assert quarter < half < pixels
    assert 1.8 < half / quarter < 2.0  # the frames halve; actions, rewards and flags stay
    assert r["pixel_to_latent_uint8_bytes"] == pytest.approx(pixels / quarter)
    assert r["latents_uint8"]["pixels_to_this_bytes"] == r["pixel_to_latent_uint8_bytes"]
    assert r["pixels"]["pixels_to_this_bytes"] == 1.0
    with pytest.raises(ValueError, match="uint8"):
        latent_replay(10, dtype="int8")


# --------------------------------------------------------------------------- train sessions

# The same tiny PPO run without the mid-run evaluation: only the final one, where the cap is checked.
_EVERY = _PPO_TINY.index("--eval-every")
PPO_TINY = _PPO_TINY[:_EVERY] + _PPO_TINY[_EVERY + 2:]


def test_episode_cap_truncates_long_episodes_and_counts_only_the_ones_it_cut():
    env = make_env("tiny:catch", seed=0, image_size=SIZE)
    natural = play(env, lambda obs: 0, 1)[1][0]
    capped = EpisodeCap(env, natural - 2)
    _, lengths, _ = play(capped, lambda obs: 0, 3)
    assert lengths == [natural - 2] * 3 and capped.cut == 3
    loose = EpisodeCap(env, natural)  # the env ends the episode itself at the cap: not counted as cut
    assert play(loose, lambda obs: 0, 2)[1] == [natural] * 2 and loose.cut == 0
    with pytest.raises(ValueError, match="max_steps"):
        EpisodeCap(env, 0)
    env.close()


def test_ppo_evaluation_stops_at_the_cap_and_reports_the_cut_episodes(tmp_path, monkeypatch, capsys):
    repeat = 1  # tiny:catch: one env step per agent step
    monkeypatch.setattr(train_session, "EVAL_MAX_ENV_FRAMES", 3 * repeat)
    run = tmp_path / "ppo"
    assert atcrl(["train", *PPO_TINY, "--steps", "128", "--out", str(run)]) == 0
    rows = read_jsonl(run / "metrics.jsonl")
    evals = [r for r in rows if "eval/return_mean" in r]
    assert evals and all(r["eval/length_mean"] == 3 and r["eval/truncated"] == 3 for r in evals)
    memory = [r["perf/replay_bytes"] for r in rows if "perf/replay_bytes" in r]
    assert len(memory) == 1 and memory[0] > 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["fastpath"] == fastpath.describe(FastPathConfig(), "cpu") | {"threads": summary["fastpath"]["threads"]}
    assert summary["process"]["threads"] == summary["fastpath"]["threads"] >= 1
    assert isinstance(summary["process"]["allocator_tuned"], bool)


def test_a_sac_session_logs_its_replay_bytes_once_at_its_start(tmp_path):
    cfg = tyro.cli(TrainConfig, args=[*SAC_TINY, "--steps", "60", "--out", str(tmp_path)])
    plan = resolve(cfg)
    run = build(plan)
    session = Session(cfg, plan, tmp_path, run, describe_run(cfg, plan, run), None)
    session.close()
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows == [{"step": 0, "time": rows[0]["time"], "perf/replay_bytes": float(run.replay.nbytes)}]
    assert run.replay.nbytes >= 2000 * SIZE * SIZE * 3 and np.isfinite(rows[0]["perf/replay_bytes"])
