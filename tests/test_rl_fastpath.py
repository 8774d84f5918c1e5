"""The RL agents on the fast path: plain fp32 stays bit for bit, the default agrees with it, bf16 keeps the
losses in fp32, and the encoder-mode gradient split holds on every path."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import pytest
import torch

from atcrl.data.batches import PairBatch, TransitionBatch
from atcrl.fastpath import FastPathConfig, autocast, prepare_module
from atcrl.nets.encoders import ConvEncoder
from atcrl.rl.modes import EncoderMode
from atcrl.rl.ppo import ActorCritic, PPOAgent, PPOConfig
from atcrl.rl.rollout import Rollout
from atcrl.rl.sac import SACAgent, SACConfig
from atcrl.train import ppo_loop, sac_loop
from atcrl.ul.atc import ATC, ATCConfig
from atcrl.ul.optim import ULOptimConfig, apply_ul_loss, make_ul_optimizer, ul_step

SAC_SHAPE, PPO_SHAPE = (6, 32, 32), (4, 36, 36)
SMALL_SAC = SACConfig(latent_dim=8, hidden=(32, 32))
SMALL_ATC = ATCConfig(batch_size=8, latent_size=16, predictor_hidden=16)
PLAIN = FastPathConfig.fp32_eager()
DEFAULT_NO_BF16 = FastPathConfig(bf16=False, fused_optim=False)
"""The default fast path with bf16 pinned off, as auto resolves it on CPUs without AMX (and so on this one), and
the for-each Adam, so updates can be compared bit for bit."""
BF16 = FastPathConfig(bf16=True)
"""bf16 forced on: exercises the autocast code paths on any device."""


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- helpers


def encoders(module: torch.nn.Module) -> list[ConvEncoder]:
    return [m for m in module.modules() if isinstance(m, ConvEncoder)]


def nchw(*modules: torch.nn.Module) -> None:
    """The plain NCHW activation layout, set by hand (what fp32_eager's prepare_module must reproduce)."""
    for module in modules:
        for enc in encoders(module):
            enc.channels_last = False


def sac_batch(seed: int, batch_size: int = 8) -> TransitionBatch:
    g = torch.Generator().manual_seed(seed)
    obs = lambda: torch.randint(0, 256, (batch_size, *SAC_SHAPE), dtype=torch.uint8, generator=g)
    return TransitionBatch(obs=obs(), action=torch.rand(batch_size, 2, generator=g) * 2 - 1,
                           reward=torch.randn(batch_size, generator=g), discount=torch.full((batch_size,), 0.99),
                           next_obs=obs(), task=torch.zeros(batch_size, dtype=torch.int64))


class SACSetup:
    """A SAC agent (and, decoupled, an ATC objective on its conv) updated the way sac_loop.update does.

    fast=None builds them as code that knows nothing of the fast path: no autocast, no prepare_module.
    """

    def __init__(self, mode: EncoderMode, fast: FastPathConfig | None, seed: int = 0):
        torch.manual_seed(seed)
        self.fast = fast
        self.agent = SACAgent(ConvEncoder("dmc", SAC_SHAPE), 2, mode, SMALL_SAC, fast=fast)
        self.atc = self.ul_opt = self.ul_sched = None
        if mode is EncoderMode.decoupled:
            self.atc = ATC(self.agent.encoder, SMALL_ATC)
            self.ul_opt, self.ul_sched = make_ul_optimizer(self.atc, ULOptimConfig(warmup_updates=0, total_updates=10))
        if fast is not None:
            for module in (self.agent, self.atc):
                if module is not None:
                    prepare_module(module, fast)

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.agent, self.atc) if m is not None]

    def update(self, seed: int) -> dict[str, float]:
        torch.manual_seed(1000 + seed)  # the same shifts and policy noise for every setup
        batch = self.agent.prepare(sac_batch(seed))
        metrics, features = self.agent.update(batch, keep_graph=self.atc is not None)
        if self.atc is not None:
            with autocast("cpu", self.fast) if self.fast is not None else contextlib.nullcontext():
                loss, ul = self.atc.loss_from_features(features, batch.next_obs)
            metrics.update(ul)
            metrics.update(apply_ul_loss(self.atc, self.ul_opt, self.ul_sched, loss, 10.0))
        return metrics

    def state(self) -> dict[str, torch.Tensor]:
        out = {f"agent.{k}": v for k, v in self.agent.state_dict()["modules"].items()}
        if self.atc is not None:
            out.update({f"atc.{k}": v for k, v in self.atc.state_dict().items()})
        return out

    def grads(self) -> dict[str, torch.Tensor]:
        return {f"{i}.{name}": p.grad for i, m in enumerate(self.modules())
                for name, p in m.named_parameters() if p.grad is not None}


def ppo_rollout(agent: PPOAgent, seed: int, T: int = 4, N: int = 4) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    shape, dtype = agent.policy_input_spec()
    ro = Rollout.empty(T, N, shape, dtype, "cpu")
    for t in range(T):
        obs = torch.randint(0, 256, (N, *PPO_SHAPE), generator=g, dtype=torch.uint8)
        a = agent.act(obs, generator=g)
        ro.inputs[t], ro.actions[t], ro.logp[t], ro.values[t] = a.policy_input, a.action, a.logp, a.value
    ro.rewards = torch.randn(T, N, generator=g)
    ro.terminated = torch.rand(T, N, generator=g) < 0.2
    ro.last_values = agent.value(torch.randint(0, 256, (N, *PPO_SHAPE), generator=g, dtype=torch.uint8))
    return ro


def pair_batch(seed: int, B: int = 8) -> PairBatch:
    g = torch.Generator().manual_seed(seed)
    img = lambda: torch.randint(0, 256, (B, *PPO_SHAPE), generator=g, dtype=torch.uint8)
    return PairBatch(anchor=img(), positive=img(), valid=torch.ones(B, dtype=torch.bool),
                     actions=torch.zeros(B, 1, dtype=torch.int64), task=torch.zeros(B, dtype=torch.int64))


class PPOSetup:
    """A PPO agent and an ATC objective on its conv, updated the way ppo_loop does (RL, then UL)."""

    def __init__(self, mode: EncoderMode, fast: FastPathConfig | None, seed: int = 0):
        torch.manual_seed(seed)
        self.fast = fast
        net = ActorCritic(ConvEncoder("atari", PPO_SHAPE), 3, hidden=32)
        self.agent = PPOAgent(net, mode, PPOConfig(minibatches=2, epochs=2), fast=fast)
        self.atc = ATC(net.encoder, SMALL_ATC)
        self.ul_opt, self.ul_sched = make_ul_optimizer(self.atc, ULOptimConfig(warmup_updates=0, total_updates=10))
        if fast is not None:
            prepare_module(net, fast)
            prepare_module(self.atc, fast)

    def modules(self) -> list[torch.nn.Module]:
        return [self.agent.net, self.atc]

    def update(self, seed: int) -> dict[str, float]:
        torch.manual_seed(1000 + seed)
        metrics = self.agent.update(ppo_rollout(self.agent, seed), progress=0.1,
                                    generator=torch.Generator().manual_seed(seed))
        metrics.update(ul_step(self.atc, self.ul_opt, self.ul_sched, pair_batch(seed), 10.0, fast=self.fast))
        return metrics

    def state(self) -> dict[str, torch.Tensor]:
        return {**{f"net.{k}": v for k, v in self.agent.net.state_dict().items()},
                **{f"atc.{k}": v for k, v in self.atc.state_dict().items()}}

    def grads(self) -> dict[str, torch.Tensor]:
        return {f"{i}.{name}": p.grad for i, m in enumerate(self.modules())
                for name, p in m.named_parameters() if p.grad is not None}


SETUPS = [(SACSetup, EncoderMode.end_to_end), (SACSetup, EncoderMode.decoupled), (SACSetup, EncoderMode.frozen),
          (PPOSetup, EncoderMode.end_to_end), (PPOSetup, EncoderMode.decoupled)]
IDS = [f"{cls.__name__[:3]}-{mode.value}" for cls, mode in SETUPS]


def train_a_little(setup, updates: int = 3) -> list[dict[str, float]]:
    return [setup.update(seed) for seed in range(updates)]


def assert_same_state(a, b) -> None:
    sa, sb = a.state(), b.state()
    assert sa.keys() == sb.keys()
    differing = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differing, differing


# --------------------------------------------------------------------------- bit for bit


@pytest.mark.parametrize(("setup", "mode"), SETUPS, ids=IDS)
def test_fp32_paths_are_bit_identical_to_code_that_never_heard_of_the_fast_path(setup, mode):
    # Without AMX, the default fast path is the encoder's own default layout (channels-last) with no
    # autocast: exactly what the agents computed before they took a FastPathConfig.
    before = setup(mode, None)
    default = setup(mode, DEFAULT_NO_BF16)
    assert train_a_little(before) == train_a_little(default)
    assert_same_state(before, default)
    # fp32_eager is plain PyTorch: NCHW activations, no autocast, nothing else changed.
    plain_before = setup(mode, None)
    nchw(*plain_before.modules())
    plain = setup(mode, PLAIN)
    assert all(not e.channels_last for m in plain.modules() for e in encoders(m))
    assert train_a_little(plain_before) == train_a_little(plain)
    assert_same_state(plain_before, plain)


# --------------------------------------------------------------------------- within tolerance


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


@pytest.mark.parametrize(("setup", "mode"), SETUPS, ids=IDS)
def test_the_default_fast_path_agrees_with_fp32_eager_and_forced_bf16_stays_close(setup, mode):
    plain, default, bf16 = setup(mode, PLAIN), setup(mode, DEFAULT_NO_BF16), setup(mode, BF16)
    m_plain, m_default, m_bf16 = plain.update(0), default.update(0), bf16.update(0)
    assert m_plain.keys() == m_default.keys() == m_bf16.keys()
    # channels-last only reorders the convolutions' sums: one update agrees to float32 rounding.
    for k in m_plain:
        assert m_default[k] == pytest.approx(m_plain[k], rel=1e-4, abs=1e-5), k
    g_plain, g_default, g_bf16 = plain.grads(), default.grads(), bf16.grads()
    assert g_plain.keys() == g_default.keys() == g_bf16.keys() and g_plain
    for k in g_plain:
        assert relative_error(g_default[k], g_plain[k]) < 1e-4, k
        assert g_bf16[k].dtype == torch.float32  # weights and their gradients stay fp32 under autocast
    # bf16 rounds every matmul input to 8 bits of mantissa: losses move by about a percent, not more.
    for k in ("rl/critic_loss", "rl/loss", "ul/loss"):
        if k in m_plain:
            assert m_bf16[k] == pytest.approx(m_plain[k], rel=0.05, abs=0.02), k
    assert all(math.isfinite(v) for v in m_bf16.values())


def test_under_bf16_the_sac_losses_and_ppo_logits_are_float32():
    sac = SACSetup(EncoderMode.end_to_end, BF16)
    batch = sac.agent.prepare(sac_batch(0))
    loss, features, actor_in, _ = sac.agent.critic_loss(batch)
    assert features.dtype == torch.bfloat16  # the conv did run in bf16...
    assert loss.dtype == torch.float32  # ...but targets and the loss did not
    actor_loss, alpha_loss, _ = sac.agent.actor_alpha_loss(actor_in)
    assert actor_loss.dtype == alpha_loss.dtype == torch.float32
    ppo = PPOSetup(EncoderMode.end_to_end, BF16)
    logits, values = ppo.agent._heads(torch.randint(0, 256, (5, *PPO_SHAPE), dtype=torch.uint8))
    assert logits.dtype == values.dtype == torch.float32


# --------------------------------------------------------------------------- gradient split


def reached(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> bool:
    params = [p for p in params if p.requires_grad]
    if not params:
        return False
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return any(g is not None and bool(g.abs().sum() > 0) for g in grads)


@pytest.mark.parametrize("fast", [DEFAULT_NO_BF16, BF16], ids=["default", "bf16"])
@pytest.mark.parametrize("mode", list(EncoderMode))
def test_sac_losses_reach_the_conv_only_where_the_mode_says_on_the_fast_path(mode, fast):
    s = SACSetup(mode, fast)
    conv = list(s.agent.encoder.parameters())
    heads = [*s.agent.critic_trunk.parameters(), *s.agent.critic.parameters(), *s.agent.actor_trunk.parameters(),
             *s.agent.actor.parameters(), s.agent.log_alpha]
    batch = s.agent.prepare(sac_batch(0))
    critic_loss, features, actor_in, _ = s.agent.critic_loss(batch, keep_graph=s.atc is not None)
    assert reached(critic_loss, conv) == (mode is EncoderMode.end_to_end)
    actor_loss, _, _ = s.agent.actor_alpha_loss(actor_in)
    assert not reached(actor_loss, conv) and reached(actor_loss, list(s.agent.actor.parameters()))
    if s.atc is not None:  # decoupled: the UL loss on the critic's forward pass trains the conv, nothing else
        with autocast("cpu", fast):
            ul_loss, _ = s.atc.loss_from_features(features, batch.next_obs)
        assert reached(ul_loss, conv) and not reached(ul_loss, heads)


@pytest.mark.parametrize("fast", [DEFAULT_NO_BF16, BF16], ids=["default", "bf16"])
@pytest.mark.parametrize("mode", [EncoderMode.end_to_end, EncoderMode.decoupled])
def test_ppo_updates_train_the_encoder_only_where_the_mode_says_on_the_fast_path(mode, fast):
    s = PPOSetup(mode, fast)
    encoder, head = s.agent.net.encoder, s.agent.net.head
    enc0 = {k: v.clone() for k, v in encoder.state_dict().items()}
    head0 = {k: v.clone() for k, v in head.state_dict().items()}
    s.agent.update(ppo_rollout(s.agent, 0), progress=0.0)
    enc_moved = any(not torch.equal(enc0[k], v) for k, v in encoder.state_dict().items())
    assert enc_moved == (mode is EncoderMode.end_to_end)
    assert all((p.grad is not None) == (mode is EncoderMode.end_to_end) for p in encoder.parameters())
    head1 = {k: v.clone() for k, v in head.state_dict().items()}
    assert any(not torch.equal(head0[k], v) for k, v in head1.items())
    enc1 = {k: v.clone() for k, v in encoder.state_dict().items()}
    ul_step(s.atc, s.ul_opt, s.ul_sched, pair_batch(0), 10.0, fast=fast)  # UL: the conv moves, the heads do not
    assert any(not torch.equal(enc1[k], v) for k, v in encoder.state_dict().items())
    assert all(torch.equal(head1[k], v) for k, v in head.state_dict().items())


# --------------------------------------------------------------------------- the loops


SAC_LOOP = sac_loop.SACLoopConfig(env="tiny:point", mode=EncoderMode.decoupled, image_size=32, frame_stack=1,
                                  batch_size=16, warmup_steps=20, steps=26, replay_capacity=200, eval_every=0,
                                  eval_episodes=0, log_every=26, device="cpu", sac=SMALL_SAC)
PPO_LOOP = ppo_loop.PPOLoopConfig(env="tiny:catch", num_envs=2, horizon=8, image_size=36, steps=2 * 16,
                                  ul_start_steps=0, rl_start_steps=0, ul_replay_size=100, device="cpu",
                                  atc=SMALL_ATC, ppo=PPOConfig(hidden=16, minibatches=2, epochs=1))


@pytest.mark.parametrize("fast", [PLAIN, BF16], ids=["fp32_eager", "bf16"])
def test_build_run_puts_every_conv_of_agent_and_objective_on_the_configured_path(fast):
    sac = sac_loop.build_run(dataclasses.replace(SAC_LOOP, fast=fast))
    ppo = ppo_loop.build_run(dataclasses.replace(PPO_LOOP, fast=fast))
    # SAC: the shared online conv, the agent's target conv, ATC's momentum conv; PPO: the shared conv, ATC's.
    for run, modules, agent, n in ((sac, (sac.agent, sac.objective), sac.agent, 3),
                                   (ppo, (ppo.agent.net, ppo.ul.objective), ppo.agent, 2)):
        convs = {id(e): e for m in modules for e in encoders(m)}.values()
        assert len(convs) == n and all(e.channels_last == fast.channels_last for e in convs)
        assert agent.fast is fast and run.process["threads"] == torch.get_num_threads()
    ppo.env.close()


@pytest.mark.parametrize("fast", [DEFAULT_NO_BF16, BF16], ids=["default", "bf16"])
def test_both_loops_train_on_the_fast_path_with_finite_rl_and_ul_metrics(fast):
    _, history = sac_loop.train_sac(dataclasses.replace(SAC_LOOP, fast=fast))
    metrics = history[-1][1]
    assert {"rl/critic_loss", "ul/loss", "ul/accuracy"} <= metrics.keys()
    run, history = ppo_loop.train_ppo(dataclasses.replace(PPO_LOOP, fast=fast))
    run.env.close()
    metrics = history[-1][1]
    assert {"rl/loss", "ul/loss"} <= metrics.keys()
    for m in history:
        assert all(math.isfinite(v) for v in m[1].values())
