"""SAC: the encoder-mode gradient split, optimizer ownership, target cadence, resume, and learning."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from atcrl.data.batches import TransitionBatch
from atcrl.envs import make_env
from atcrl.nets.encoders import ConvEncoder
from atcrl.rl.modes import EncoderMode
from atcrl.rl.sac import SACAgent, SACConfig, squashed_sample
from atcrl.train.sac_loop import SACLoopConfig, build_run, train
from atcrl.ul.atc import ATC, ATCConfig
from atcrl.ul.optim import ULOptimConfig, apply_ul_loss, make_ul_optimizer

SHAPE = (6, 32, 32)
SMALL = SACConfig(latent_dim=8, hidden=(32, 32))
MODES = list(EncoderMode)


@pytest.fixture(autouse=True)
def one_thread():
    # These tiny batches gain nothing from intra-op threads, and on a loaded machine the
    # spinning thread pool costs several times the work itself.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_agent(mode: EncoderMode, seed: int = 0, cfg: SACConfig = SMALL) -> SACAgent:
    torch.manual_seed(seed)
    return SACAgent(ConvEncoder("dmc", SHAPE), 2, mode, cfg)


def random_batch(batch_size: int = 8, seed: int = 0) -> TransitionBatch:
    g = torch.Generator().manual_seed(seed)
    obs = lambda: torch.randint(0, 256, (batch_size, *SHAPE), dtype=torch.uint8, generator=g)
    return TransitionBatch(
        obs=obs(), action=torch.rand(batch_size, 2, generator=g) * 2 - 1,
        reward=torch.randn(batch_size, generator=g), discount=torch.full((batch_size,), 0.99),
        next_obs=obs(), task=torch.zeros(batch_size, dtype=torch.int64),
    )


def params(*modules) -> list[torch.nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


def rl_params(agent: SACAgent) -> list[torch.nn.Parameter]:
    return params(agent.critic_trunk, agent.critic, agent.actor_trunk, agent.actor) + [agent.log_alpha]


def reached(loss: torch.Tensor, group: list[torch.nn.Parameter]) -> bool:
    """True if ``loss`` sends a non-zero gradient to any parameter of ``group``."""
    group = [p for p in group if p.requires_grad]
    if not group:
        return False
    grads = torch.autograd.grad(loss, group, allow_unused=True, retain_graph=True)
    return any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def snapshot(ps) -> list[torch.Tensor]:
    return [p.detach().clone() for p in ps]


def identical(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# --- which loss reaches which parameters --------------------------------------------------------------


@pytest.mark.parametrize("keep_graph", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_critic_loss_reaches_the_conv_only_end_to_end(mode, keep_graph):
    # keep_graph: the conv's output keeps its graph for a UL loss (decoupled), yet the critic is cut off.
    agent = make_agent(mode)
    loss, _, _, _ = agent.critic_loss(agent.prepare(random_batch()), keep_graph=keep_graph)
    assert reached(loss, params(agent.encoder)) == (mode is EncoderMode.end_to_end)
    assert reached(loss, params(agent.critic_trunk, agent.critic))
    assert not reached(loss, params(agent.actor_trunk, agent.actor))


@pytest.mark.parametrize("mode", MODES)
def test_actor_loss_never_reaches_the_conv(mode):
    agent = make_agent(mode)
    _, _, actor_in, _ = agent.critic_loss(agent.prepare(random_batch()))
    actor_loss, alpha_loss, _ = agent.actor_alpha_loss(actor_in)
    assert not reached(actor_loss, params(agent.encoder))
    assert reached(actor_loss, params(agent.actor_trunk, agent.actor))
    assert reached(alpha_loss, [agent.log_alpha]) and not reached(alpha_loss, params(agent.actor))


def test_decoupled_only_the_ul_loss_reaches_the_conv():
    agent = make_agent(EncoderMode.decoupled)
    atc = ATC(agent.encoder, ATCConfig(batch_size=8, latent_size=16, predictor_hidden=32))
    batch = agent.prepare(random_batch())
    _, features = agent.update(batch, keep_graph=True)
    ul_loss, _ = atc.loss_from_features(features, batch.next_obs)
    assert reached(ul_loss, params(agent.encoder))
    assert not reached(ul_loss, rl_params(agent))


@pytest.mark.parametrize("mode", MODES)
def test_optimizers_own_the_conv_only_where_the_mode_says(mode):
    agent = make_agent(mode)
    conv = {id(p) for p in agent.encoder.parameters()}
    owned = lambda opt: {id(p) for g in opt.param_groups for p in g["params"]}
    assert (conv <= owned(agent.critic_opt)) == (mode is EncoderMode.end_to_end)
    assert not conv & owned(agent.critic_opt) or mode is EncoderMode.end_to_end
    assert not conv & (owned(agent.actor_opt) | owned(agent.alpha_opt))
    if mode is EncoderMode.frozen:
        assert not any(p.requires_grad for p in agent.encoder.parameters())
    if mode is EncoderMode.decoupled:
        atc = ATC(agent.encoder, ATCConfig(batch_size=8, latent_size=16, predictor_hidden=32))
        ul_opt, _ = make_ul_optimizer(atc, ULOptimConfig(warmup_updates=0, total_updates=10))
        assert conv <= owned(ul_opt)
        assert not owned(ul_opt) & {id(p) for p in rl_params(agent)}


@pytest.mark.parametrize("mode", MODES)
def test_rl_updates_change_the_conv_only_end_to_end(mode):
    agent = make_agent(mode)
    before = snapshot(agent.encoder.parameters())
    for i in range(4):
        agent.update(agent.prepare(random_batch(seed=i)))
    assert identical(before, agent.encoder.parameters()) == (mode is not EncoderMode.end_to_end)
    if mode is EncoderMode.decoupled:  # the UL step, and only it, moves the conv
        atc = ATC(agent.encoder, ATCConfig(batch_size=8, latent_size=16, predictor_hidden=32))
        ul_opt, ul_sched = make_ul_optimizer(atc, ULOptimConfig(warmup_updates=0, total_updates=10))
        batch = agent.prepare(random_batch(seed=9))
        _, features = agent.update(batch, keep_graph=True)
        assert identical(before, agent.encoder.parameters())
        loss, _ = atc.loss_from_features(features, batch.next_obs)
        apply_ul_loss(atc, ul_opt, ul_sched, loss, 10.0)
        assert not identical(before, agent.encoder.parameters())


# --- targets, cadence, numerics -----------------------------------------------------------------------


def test_targets_follow_tau_every_second_update_and_actor_every_second():
    agent = make_agent(EncoderMode.end_to_end)
    cfg = agent.cfg
    pairs = {  # (online, target, tau)
        "critic": (agent.critic, agent.target_critic, cfg.critic_tau),
        "trunk": (agent.critic_trunk, agent.target_critic_trunk, cfg.encoder_tau),
        "conv": (agent.encoder, agent.target_encoder, cfg.encoder_tau),
    }
    targets0 = {k: snapshot(t.parameters()) for k, (_, t, _) in pairs.items()}
    actor0 = snapshot(params(agent.actor))
    agent.update(agent.prepare(random_batch(seed=1)))  # update 1: actor steps, targets stay
    assert not identical(actor0, params(agent.actor))
    for k, (online, target, _) in pairs.items():
        assert identical(targets0[k], target.parameters()), k
        assert not identical(targets0[k], online.parameters()), k
    actor1 = snapshot(params(agent.actor))
    agent.update(agent.prepare(random_batch(seed=2)))  # update 2: no actor step, targets move
    assert identical(actor1, params(agent.actor))
    for k, (online, target, tau) in pairs.items():
        for t0, t, o in zip(targets0[k], target.parameters(), online.parameters()):
            torch.testing.assert_close(t, (1 - tau) * t0 + tau * o, rtol=0, atol=1e-6)
    assert agent.updates == 2


def test_log_std_stays_in_range_and_log_prob_matches_torch_distributions():
    agent = make_agent(EncoderMode.end_to_end)
    huge = torch.randn(16, agent.encoder.feature_dim) * 1e4
    _, log_std = agent.policy(huge)
    assert log_std.min() >= agent.cfg.log_std_min and log_std.max() <= agent.cfg.log_std_max
    mean, log_std = torch.randn(64, 3), torch.rand(64, 3) - 1.5
    action, log_prob = squashed_sample(mean, log_std, torch.Generator().manual_seed(0))
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()])
    inner = action.clamp(-1 + 1e-6, 1 - 1e-6)
    torch.testing.assert_close(log_prob, dist.log_prob(inner).sum(1), rtol=1e-3, atol=1e-3)


def test_nan_loss_raises_and_leaves_the_weights_alone():
    agent = make_agent(EncoderMode.end_to_end)
    batch = random_batch()
    batch.reward[3] = float("nan")
    before = snapshot(agent.parameters())
    with pytest.raises(FloatingPointError, match="critic loss"):
        agent.update(agent.prepare(batch))
    assert identical(before, agent.parameters())


def test_bad_construction_is_refused():
    with pytest.raises(ValueError, match="frozen"):
        SACAgent(ConvEncoder("dmc", SHAPE), 2, EncoderMode.decoupled, SMALL, latent_obs=True)
    with pytest.raises(ValueError, match="log_std_min"):
        SACConfig(log_std_min=3.0)
    with pytest.raises(ValueError, match="pretrained encoder"):
        build_run(SACLoopConfig(env="tiny:point", mode=EncoderMode.frozen, image_size=32))
    with pytest.raises(ValueError, match="continuous"):
        build_run(SACLoopConfig(env="tiny:catch", image_size=32))


# --- save / load --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [EncoderMode.end_to_end, EncoderMode.decoupled])
def test_save_load_gives_identical_actions_and_updates(mode):
    agent = make_agent(mode, seed=0)
    for i in range(3):
        agent.update(agent.prepare(random_batch(seed=i)))
    buf = io.BytesIO()
    torch.save(agent.state_dict(), buf)
    buf.seek(0)
    clone = make_agent(mode, seed=1)  # different initial weights, all overwritten by the load
    clone.load_state_dict(torch.load(buf, weights_only=True))
    assert clone.updates == agent.updates == 3
    obs = random_batch(seed=5).obs
    np.testing.assert_array_equal(agent.act(obs, "deterministic"), clone.act(obs, "deterministic"))
    for mode_ in ("sample", "warmup"):
        a = agent.act(obs, mode_, torch.Generator().manual_seed(7))
        b = clone.act(obs, mode_, torch.Generator().manual_seed(7))
        np.testing.assert_array_equal(a, b)
    # Optimizer moments, log_alpha and the update counter came along: the next update matches too.
    batch = random_batch(seed=6)
    for a in (agent, clone):
        torch.manual_seed(3)
        a.update(a.prepare(batch))
    assert identical(agent.state_dict()["modules"].values(), clone.state_dict()["modules"].values())


def test_load_refuses_another_mode():
    state = make_agent(EncoderMode.end_to_end).state_dict()
    with pytest.raises(ValueError, match="end_to_end"):
        make_agent(EncoderMode.decoupled).load_state_dict(state)


# --- the loop -----------------------------------------------------------------------------------------

POINT = SACLoopConfig(env="tiny:point", image_size=32, frame_stack=1, batch_size=32, warmup_steps=50,
                      eval_every=0, eval_episodes=2, log_every=50, sac=SMALL)


@pytest.mark.parametrize("device_replay", [False, True], ids=["host-replay", "device-replay"])
@pytest.mark.parametrize(("latent_replay", "latent_dtype"), [(True, "float16"), (True, "uint8"), (False, "float16")])
def test_frozen_run_never_changes_the_conv(latent_replay, latent_dtype, device_replay):
    torch.manual_seed(0)
    encoder = ConvEncoder("dmc", (3, 32, 32))
    before = snapshot(encoder.parameters())
    cfg = dataclasses.replace(POINT, mode=EncoderMode.frozen, latent_replay=latent_replay, latent_dtype=latent_dtype,
                              steps=120, device_replay=device_replay)
    run = build_run(cfg, encoder=encoder)
    history = train(run)
    assert identical(before, run.agent.encoder.parameters())
    stored = str(run.replay.frames.dtype).removeprefix("torch.")  # numpy on the host, torch on the device
    if latent_replay:  # the replay holds the conv's output, one per stacked observation
        assert stored == latent_dtype and run.replay.frame_shape == encoder.feature_shape
    else:
        assert stored == "uint8"
    assert run.agent.updates == 70 and "rl/critic_loss" in history[-2][1]
    assert all(math.isfinite(v) for v in history[-2][1].values())


def frozen_latent_agent(latent_dtype: str, seed: int = 0) -> SACAgent:
    torch.manual_seed(seed)
    return SACAgent(ConvEncoder("dmc", SHAPE), 2, EncoderMode.frozen, SMALL, latent_obs=True, latent_dtype=latent_dtype)


def test_uint8_latents_are_within_half_a_step_of_the_features_and_saturate_above_their_range():
    agent = frozen_latent_agent("uint8")
    g = torch.Generator().manual_seed(0)
    dim = torch.randint(0, 64, (16, *SHAPE), dtype=torch.uint8, generator=g)
    features = agent.encoder(dim)
    stored = agent.latent(dim)
    step = float(agent.latent_scale)
    assert stored.dtype == torch.uint8 and step == pytest.approx(2 * float(features.max()) / 255)
    error = (agent.latent_features(stored) - features).abs()
    assert float(error.max()) <= step / 2 * (1 + 1e-5)
    assert (stored[features == 0] == 0).all() and int(stored.max()) in (127, 128)  # the first maximum: mid-range
    # The conv has zero biases, so 4x brighter pixels give exactly 4x the features: twice the range.
    bright = dim * 4
    features = agent.encoder(bright)
    stored = agent.latent(bright)
    assert float(agent.latent_scale) == step  # fixed once
    inside = features <= 255 * step
    assert (~inside).any() and (stored[~inside] == 255).all()  # saturated, not wrapped around
    error = (agent.latent_features(stored) - features).abs()
    assert float(error[inside].max()) <= step / 2 * (1 + 1e-5)
    # float16 latents, for comparison, are within float16 rounding and carry no scale.
    half = frozen_latent_agent("float16")
    assert half.latent(dim).dtype == torch.float16 and not hasattr(half, "latent_scale")


def test_uint8_latents_take_over_8x_less_replay_memory_than_pixels():
    from atcrl.data.replay import Replay

    capacity = 100_000  # np.zeros maps pages lazily: nothing here is written, so no memory is used
    latent_shape = ConvEncoder("dmc", (9, 84, 84)).feature_shape
    pixels = Replay(capacity, (3, 84, 84), frame_stack=3, action_shape=(1,))
    as_float16 = Replay(capacity, latent_shape, frame_stack=1, action_shape=(1,), frame_dtype=np.float16)
    as_uint8 = Replay(capacity, latent_shape, frame_stack=1, action_shape=(1,), frame_dtype=np.uint8)
    assert latent_shape == (32, 7, 7)
    assert pixels.nbytes / as_float16.nbytes < 8 <= pixels.nbytes / as_uint8.nbytes


def test_the_latent_scale_is_saved_with_the_agent_and_a_loaded_agent_acts_the_same():
    agent, clone = frozen_latent_agent("uint8", seed=0), frozen_latent_agent("uint8", seed=0)
    obs = random_batch(seed=3).obs
    latents = agent.latent(obs)
    buf = io.BytesIO()
    torch.save(agent.state_dict(), buf)
    buf.seek(0)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    assert float(clone.latent_scale) == float(agent.latent_scale) > 0
    assert torch.equal(clone.latent(obs), latents)
    np.testing.assert_array_equal(clone.act(latents, "deterministic"), agent.act(latents, "deterministic"))


def test_decoupled_samples_its_own_pairs_when_batch_sizes_differ():
    cfg = dataclasses.replace(POINT, mode=EncoderMode.decoupled, ul_batch_size=16, steps=80)
    run = build_run(cfg)
    assert not run.reuses_rl_batch and run.objective.sampling.batch_size == 16
    before = snapshot(run.agent.encoder.parameters())
    history = train(run)
    metrics = history[-2][1]
    assert "ul/loss" in metrics and math.isfinite(metrics["ul/loss"])
    assert not identical(before, run.agent.encoder.parameters())


def test_run_state_round_trips_through_a_new_run():
    cfg = dataclasses.replace(POINT, mode=EncoderMode.decoupled, steps=70)
    run = build_run(cfg)
    train(run)
    fresh = build_run(dataclasses.replace(cfg, seed=1))
    buf = io.BytesIO()
    torch.save(run.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.step == 70 and fresh.agent.updates == run.agent.updates
    assert identical(run.objective.state_dict().values(), fresh.objective.state_dict().values())
    assert fresh.ul.optimizer.param_groups[0]["lr"] == run.ul.optimizer.param_groups[0]["lr"]
    assert fresh.ul.updates == run.ul.updates == run.agent.updates == 20  # one UL update per SAC update


def random_policy_return(episodes: int, seed: int) -> float:
    env = make_env("tiny:point", seed=seed, image_size=32)
    rng = np.random.default_rng(seed)
    returns = []
    for _ in range(episodes):
        env.reset()
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 2))
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def test_sac_learns_tiny_point_from_pixels():
    # Test-only shrinkage: small image, one frame (position is the whole state), small batch and
    # MLPs, short warm-up. Returns: random policy ~0, this run ~20-35, a good policy ~40.
    cfg = dataclasses.replace(POINT, mode=EncoderMode.end_to_end, image_size=40, steps=600, warmup_steps=100,
                              eval_episodes=10, log_every=600, sac=SACConfig(hidden=(64, 64)))
    history = train(build_run(cfg))
    learned = history[-1][1]["eval/return_mean"]
    baseline = random_policy_return(20, seed=1)
    assert learned > baseline + 15, (learned, baseline)


def test_decoupled_run_on_dm_control_cartpole_reports_ul_metrics():
    pytest.importorskip("dm_control")
    cfg = SACLoopConfig(env="dmc:cartpole-swingup", mode=EncoderMode.decoupled, image_size=32, steps=250,
                        fast_render=True,
                        warmup_steps=125, batch_size=32, eval_every=0, eval_episodes=1, log_every=125, sac=SMALL)
    run = build_run(cfg)
    assert run.reuses_rl_batch  # ATC contrasts the critic's shifted (obs, next_obs) minibatch
    history = train(run)
    train_metrics = [m for _, m in history if "rl/critic_loss" in m]
    assert train_metrics and all(math.isfinite(m["ul/loss"]) and 0 <= m["ul/accuracy"] <= 1 for m in train_metrics)
    assert run.agent.updates == 125 and run.objective.target_encoder is not run.agent.encoder
    assert history[-1][1]["perf/env_steps"] == 250 * 8
    assert math.isfinite(history[-1][1]["eval/return_mean"])
