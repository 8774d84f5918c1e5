"""The comparison UL objectives (CPC, ST-DIM, VAE, pixel control, inverse model, random encoder).

Batches come from real episodes of the tiny pixel envs, stored in the replay and drawn by its
samplers with each objective's own SamplingNeed: catch (grey, 3 discrete actions, ~9-step
episodes, so windows and pairs often cross an episode end) and point (RGB, 2-d continuous).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atcrl.data.batches import PairBatch, SequenceBatch
from atcrl.data.episode import Episode
from atcrl.data.replay import Replay
from atcrl.envs import env_meta, make_env
from atcrl.nets.encoders import ConvEncoder
from atcrl.ul.base import Objective
from atcrl.ul.contrastive import info_nce, masked_mean
from atcrl.ul.cpc import CPC, CPCConfig
from atcrl.ul.inputs import action_features
from atcrl.ul.inverse import InverseConfig, InverseModel
from atcrl.ul.optim import make_ul_optimizer, trainable_parameters
from atcrl.ul.pixel_control import PixelControl, PixelControlConfig, cell_rewards, discounted_returns
from atcrl.ul.random_encoder import RandomEncoder, RandomEncoderConfig
from atcrl.ul.registry import default_config, make_objective
from atcrl.ul.stdim import STDIM, STDIMConfig, conv_layer_outputs
from atcrl.ul.vae import VAE, VAEConfig, mirrored_decoder

# name -> (env, class, small config); every objective takes the env's action space the same way.
CASES = {
    "cpc": ("catch", CPC, CPCConfig(batch_size=4, length=6, burn_in=2)),
    "cpc-continuous": ("point", CPC, CPCConfig(batch_size=2, length=4, burn_in=1)),
    "stdim": ("catch", STDIM, STDIMConfig(batch_size=8)),
    "vae": ("point", VAE, VAEConfig(batch_size=6)),
    "vae-temporal": ("catch", VAE, VAEConfig(delta_t=3, batch_size=8)),
    "pixel-control": ("catch", PixelControl, PixelControlConfig(batch_size=4, length=6)),
    "inverse": ("catch", InverseModel, InverseConfig(batch_size=12)),
    "inverse-continuous": ("point", InverseModel, InverseConfig(batch_size=8)),
}
MASKED = ["cpc", "pixel-control", "inverse", "vae-temporal"]


def _episodes(spec: str, n: int, seed: int) -> list[Episode]:
    env = make_env(spec, seed=seed)
    C = env_meta(env).frame_channels
    env.action_space.seed(seed)
    episodes = []
    for _ in range(n):
        obs, _ = env.reset()
        frames, actions, rewards = [obs[-C:]], [], []
        while True:
            a = env.action_space.sample()
            obs, r, terminated, truncated, _ = env.step(a)
            frames.append(obs[-C:])
            actions.append(a)
            rewards.append(r)
            if terminated or truncated:
                break
        episodes.append(
            Episode(
                np.stack(frames),
                np.asarray(actions),
                np.asarray(rewards, np.float32),
                terminated,
                truncated and not terminated,
            )
        )
    return episodes


@pytest.fixture(scope="module")
def data():
    """env -> (replay, meta); catch has many short episodes so boundaries are common."""
    out = {}
    for name, n in (("catch", 12), ("point", 2)):
        env = make_env(f"tiny:{name}")
        meta = env_meta(env)
        out[name] = (
            Replay.from_episodes(_episodes(f"tiny:{name}", n, seed=1), frame_stack=meta.frame_stack),
            meta,
        )
    return out


def _build(name: str, data, seed: int = 0):
    env_name, cls, cfg = CASES[name]
    replay, meta = data[env_name]
    torch.manual_seed(seed)
    in_shape = (meta.frame_channels * meta.frame_stack, 84, 84)
    encoder = ConvEncoder("atari" if meta.frame_channels == 1 else "dmc", in_shape)
    action_dim = 3 if meta.discrete else 2
    return cls(encoder, cfg, action_dim=action_dim, discrete_actions=meta.discrete), replay


def _sample(objective, replay: Replay, seed: int = 0) -> PairBatch | SequenceBatch:
    need, rng = objective.sampling, np.random.default_rng(seed)
    if need.kind == "pairs":
        return replay.sample_pairs(need.batch_size, rng, delta_t=need.delta_t)
    return replay.sample_sequences(need.batch_size, rng, length=need.length)


def _loss(objective, batch) -> torch.Tensor:
    torch.manual_seed(123)  # the VAE samples its latent: the same noise for every evaluation
    return objective.loss(batch)[0]


@pytest.mark.parametrize("name", list(CASES))
def test_loss_is_finite_reaches_the_encoder_and_adam_decreases_it(name, data):
    objective, replay = _build(name, data)
    assert isinstance(objective, Objective)
    batch = _sample(objective, replay)
    optimizer = torch.optim.Adam(trainable_parameters(objective), lr=5e-4)
    torch.manual_seed(123)  # the latent noise of every _loss evaluation
    first, metrics = objective.loss(batch)
    assert first.ndim == 0 and torch.isfinite(first)
    assert metrics and all(k.startswith("ul/") and math.isfinite(v) for k, v in metrics.items())
    assert metrics["ul/loss"] == pytest.approx(first.item(), rel=1e-6)
    first.backward()
    for p in objective.encoder.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    # Every trainable parameter is reached (no dead head), and only trainable ones are.
    for n, p in objective.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    for _ in range(4):
        optimizer.step()
        objective.after_update()
        optimizer.zero_grad()
        _loss(objective, batch).backward()
    optimizer.step()
    with torch.no_grad():
        assert _loss(objective, batch).item() < first.item()


def _scramble(batch, seed: int, where: str):
    """A copy of ``batch`` with random data at its invalid (where="invalid") or valid steps.

    Discrete actions at invalid steps may even be out of range (a sampler owes nothing there).
    """
    g = torch.Generator().manual_seed(seed)
    high = 7 if where == "invalid" else 3

    def rand_like(x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            return torch.randn(x.shape, generator=g).to(x.dtype)
        return torch.randint(0, high, x.shape, generator=g).to(x.dtype)

    if isinstance(batch, SequenceBatch):
        sel = ~batch.valid if where == "invalid" else batch.valid
        obs, action, reward = batch.obs.clone(), batch.action.clone(), batch.reward.clone()
        obs[sel] = torch.randint(0, 256, obs[sel].shape, generator=g, dtype=torch.uint8)
        action[sel] = rand_like(action[sel])
        reward[sel] = rand_like(reward[sel])
        return SequenceBatch(obs, action, reward, batch.valid, batch.task)
    sel = ~batch.valid if where == "invalid" else batch.valid
    anchor, positive, actions = batch.anchor.clone(), batch.positive.clone(), batch.actions.clone()
    for x in (anchor, positive):
        x[sel] = torch.randint(0, 256, x[sel].shape, generator=g, dtype=torch.uint8)
    actions[sel] = rand_like(actions[sel])
    return PairBatch(anchor, positive, batch.valid, actions, batch.task)


@pytest.mark.parametrize("name", MASKED)
def test_data_at_invalid_steps_does_not_change_the_loss(name, data):
    objective, replay = _build(name, data)
    batch = _sample(objective, replay, seed=3)
    assert (~batch.valid).any() and batch.valid.any(), "the fixture must produce episode boundaries"
    with torch.no_grad():
        reference = _loss(objective, batch)
        torch.testing.assert_close(
            _loss(objective, _scramble(batch, 0, "invalid")), reference, rtol=1e-6, atol=1e-6
        )
        # The same perturbation at valid steps does matter, so the check above can fail.
        assert not torch.allclose(_loss(objective, _scramble(batch, 0, "valid")), reference)


def test_cpc_matches_a_naive_loop(data):
    objective, replay = _build("cpc", data)
    batch = _sample(objective, replay, seed=5)
    s, B = objective.cfg.burn_in, batch.obs.shape[1]
    with torch.no_grad():
        loss = objective.loss(batch)[0]
        z = objective.compressor(objective.encoder(batch.obs.flatten(0, 1)).flatten(1)).view(
            *batch.obs.shape[:2], -1
        )
        inputs = []
        for t in range(len(z)):
            prev_a = (
                torch.zeros(B, 3)
                if t == 0
                else torch.eye(3)[batch.action[t - 1]] * batch.valid[t - 1, :, None]
            )
            prev_r = torch.zeros(B) if t == 0 else batch.reward[t - 1] * batch.valid[t - 1]
            inputs.append(torch.cat([z[t], prev_a, prev_r[:, None]], 1))
        context = objective.rnn(torch.stack(inputs))[0]
        T = len(z) - s
        cands = [(t, b) for t in range(s, s + T) for b in range(B) if batch.valid[t, b]]
        terms = []
        for k in range(1, T):
            for t in range(s, s + T - k):
                for b in range(B):
                    if not batch.valid[t + k, b]:
                        continue  # target past the episode end (and then so is nothing before it)
                    pred = objective.predictors[k - 1](context[t, b])
                    logits = torch.stack([pred @ z[tc, bc] for tc, bc in cands])
                    terms.append(torch.logsumexp(logits, 0) - pred @ z[t + k, b])
    assert len(terms) > 0
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-4, atol=1e-4)


def test_stdim_momentum_target_gets_no_gradient_and_follows_the_rule(data):
    objective, replay = _build("stdim", data)
    target = objective.target_encoder
    for p, q in zip(target.parameters(), objective.encoder.parameters()):
        assert torch.equal(p, q) and not p.requires_grad  # starts as a copy
    optimizer, _ = make_ul_optimizer(objective)
    owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not owned & {id(p) for p in target.parameters()}
    objective.loss(_sample(objective, replay))[0].backward()
    assert all(p.grad is None for p in target.parameters())
    optimizer.step()
    before = [p.clone() for p in target.parameters()]
    online = [p.detach().clone() for p in objective.encoder.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, online))  # the step moved the online encoder
    objective.after_update()
    tau = objective.cfg.target_tau
    for new, old, o in zip(target.parameters(), before, online):
        torch.testing.assert_close(new, (1 - tau) * old + tau * o)


def test_conv_layer_outputs_end_with_the_encoder_output():
    torch.manual_seed(0)
    for arch, shape in (("dmc", (9, 84, 84)), ("dmlab", (3, 72, 96))):
        enc = ConvEncoder(arch, shape)
        x = torch.randint(0, 256, (2, *shape), dtype=torch.uint8)
        layers = conv_layer_outputs(enc, x)
        assert len(layers) == len(enc.convs)
        torch.testing.assert_close(layers[-1], enc(x))


@pytest.mark.parametrize(
    "arch, shape", [("dmc", (9, 84, 84)), ("atari", (4, 84, 84)), ("dmlab", (3, 72, 96))]
)
def test_vae_decoder_mirrors_the_encoder_to_the_input_shape(arch, shape):
    enc = ConvEncoder(arch, shape)
    out = mirrored_decoder(enc)(torch.rand(2, *enc.feature_shape))
    assert out.shape == (2, *shape)


def test_cell_rewards_match_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    obs, nxt = (torch.randint(0, 256, (2, 6, 84, 84), generator=g, dtype=torch.uint8) for _ in range(2))
    got = cell_rewards(obs, nxt, crop=80, cell=4, frame_channels=3)
    assert got.shape == (2, 20, 20)
    a, b = obs.numpy().astype(np.float64) / 255, nxt.numpy().astype(np.float64) / 255
    want = np.zeros((2, 20, 20))
    for n in range(2):
        for i in range(20):
            for j in range(20):
                rows, cols = slice(2 + 4 * i, 6 + 4 * i), slice(2 + 4 * j, 6 + 4 * j)
                want[n, i, j] = np.abs(b[n, 3:, rows, cols] - a[n, 3:, rows, cols]).mean()
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_discounted_returns_match_a_naive_loop():
    g = torch.Generator().manual_seed(1)
    T, B, gamma = 7, 4, 0.9
    rewards = torch.rand(T, B, 2, 2, generator=g)
    ends = torch.tensor([7, 3, 0, 5])  # rewards known for t < end
    known = torch.arange(T)[:, None] < ends[None]
    got = discounted_returns(rewards, known, gamma)
    for b in range(B):
        for t in range(T):
            want = sum(gamma ** (j - t) * rewards[j, b] for j in range(t, int(ends[b]))) if t < ends[b] else 0
            torch.testing.assert_close(got[t, b], torch.zeros(2, 2) + want)


def test_pixel_control_refuses_continuous_actions_and_cpc_needs_the_action_space():
    enc = ConvEncoder("dmc", (9, 84, 84))
    with pytest.raises(ValueError, match="discrete action space"):
        PixelControl(enc, action_dim=2, discrete_actions=False)
    with pytest.raises(ValueError, match="action_dim"):
        CPC(enc)


def test_info_nce_ignores_masked_columns_without_nans():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 6, generator=g, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 5])
    cols = torch.tensor([True, True, True, True, False, False])  # row 4's label is masked
    rows = labels < 4
    per_row, correct = info_nce(logits, labels, col_valid=cols)
    loss = masked_mean(per_row, rows)
    want = torch.stack([torch.logsumexp(logits[i, :4], 0) - logits[i, labels[i]] for i in range(4)]).mean()
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert (
        torch.isfinite(logits.grad).all()
        and logits.grad[4].abs().sum() == 0
        and logits.grad[:, 4:].abs().sum() == 0
    )
    assert correct[:4].tolist() == (logits[:4, :4].argmax(1) == labels[:4]).tolist()


def test_action_features_reject_out_of_range_valid_actions_only():
    actions = torch.tensor([[0, 2], [9, 1]])
    valid = torch.tensor([[True, True], [False, True]])
    x = action_features(actions, 2, 3, True, mask=valid)
    assert x.shape == (2, 2, 3) and x[1, 0].sum() == 0 and x[0, 1, 2] == 1
    with pytest.raises(ValueError, match="outside"):
        action_features(actions, 2, 3, True)


def test_random_encoder_never_trains_and_exports_seeded_kaiming_weights():
    torch.manual_seed(0)
    a = RandomEncoder(ConvEncoder("dmc", (9, 84, 84)), RandomEncoderConfig(seed=7))
    torch.manual_seed(1)
    b = RandomEncoder(ConvEncoder("dmc", (9, 84, 84)), RandomEncoderConfig(seed=7))
    c = RandomEncoder(ConvEncoder("dmc", (9, 84, 84)), RandomEncoderConfig(seed=8))
    assert isinstance(a, Objective)
    assert not trainable_parameters(a)
    with pytest.raises(ValueError):
        make_ul_optimizer(a)  # the signal a training loop uses to skip UL updates
    loss, metrics = a.loss(None)
    assert loss.item() == 0.0 and not loss.requires_grad and metrics == {"ul/loss": 0.0}
    sa, sb, sc = (o.encoder.state_dict() for o in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # the seed alone decides the weights
    assert not torch.equal(sa["convs.0.weight"], sc["convs.0.weight"])
    w = sa["convs.1.weight"]  # 32 x 32 x 3 x 3: Kaiming normal std sqrt(2 / fan_in)
    assert w.std().item() == pytest.approx(math.sqrt(2 / (32 * 9)), rel=0.05)
    assert all(sa[k].abs().sum() == 0 for k in sa if k.endswith("bias"))


@pytest.mark.parametrize("name", ["cpc", "stdim", "vae", "pixel-control", "inverse", "random"])
def test_registry_builds_each_objective(name):
    enc = ConvEncoder("atari", (4, 84, 84))
    objective = make_objective(name, enc, action_dim=3, discrete_actions=True)
    assert isinstance(objective, Objective) and objective.encoder is enc
    assert type(default_config(name)) is type(objective.cfg)


def test_default_sampling_follows_the_reference_settings():
    enc = ConvEncoder("atari", (4, 84, 84))
    cpc = CPC(enc, action_dim=3, discrete_actions=True)
    assert (cpc.sampling.kind, cpc.sampling.batch_size, cpc.sampling.length) == ("sequences", 16, 48)
    assert len(cpc.predictors) == 31 and cpc.cfg.grad_clip == 1000
    assert STDIM(enc).sampling == STDIM(enc).sampling.__class__("pairs", 64, delta_t=3)
    assert (VAE(enc).sampling.batch_size, VAE(enc).sampling.delta_t) == (128, 0)
    inv = InverseModel(enc, action_dim=3, discrete_actions=True)
    assert (inv.sampling.kind, inv.sampling.delta_t, inv.cfg.entropy_coeff) == ("pairs", 3, 0.01)
