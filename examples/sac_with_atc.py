"""A plain SAC from pixels on tiny:point plus ATC: the encoder learns from ATCLoss alone (decoupled).

    python examples/sac_with_atc.py                                      # 5k steps, ~8 min on one CPU thread
    python examples/sac_with_atc.py --steps 300 --start 100 --batch 32   # a smoke run in seconds
With the defaults the mean episode return rose from 3.9 (random actions) to 39.4 (last 20 episodes; 50 is
the most an episode can score). The last line printed is a JSON summary.
"""
import argparse
import copy
import json

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import atcrl
from atcrl.losses import ATCLoss
from atcrl.nets.encoders import ConvEncoder
from atcrl.ul.atc import ATCConfig

p = argparse.ArgumentParser()
for flag, default in [("steps", 5000), ("start", 500), ("batch", 64), ("image_size", 40), ("seed", 0)]:
    p.add_argument(f"--{flag.replace('_', '-')}", type=int, default=default)
args = p.parse_args()
torch.manual_seed(args.seed)
rng = np.random.default_rng(args.seed)
env = atcrl.make_env("tiny:point", seed=args.seed, image_size=args.image_size)
shape, A = env.observation_space.shape, env.action_space.shape[0]
encoder = ConvEncoder("dmc", shape)
atc = ATCLoss(encoder, ATCConfig(latent_size=64))  # <- the ATC part: its loss trains the encoder
mlp = lambda i, o: nn.Sequential(nn.Linear(i, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, o))
D = encoder.feature_dim
actor, q1, q2 = mlp(D, 2 * A), mlp(D + A, 1), mlp(D + A, 1)
q1_t, q2_t = copy.deepcopy(q1), copy.deepcopy(q2)
log_alpha = torch.zeros((), requires_grad=True)
critics, critic_targets = [*q1.parameters(), *q2.parameters()], [*q1_t.parameters(), *q2_t.parameters()]
opt_q, opt_pi, opt_alpha = (torch.optim.Adam(ps, 3e-4) for ps in (critics, actor.parameters(), [log_alpha]))
opt_atc = torch.optim.Adam(atc.parameters(), 1e-3)
features = lambda x: encoder(torch.as_tensor(x)).flatten(1)
q_min = lambda n1, n2, z, a: torch.min(n1(torch.cat([z, a], 1)), n2(torch.cat([z, a], 1))).squeeze(1)

def policy(z):  # tanh-squashed Gaussian and its log-probability
    mu, log_std = actor(z).chunk(2, -1)
    dist = torch.distributions.Normal(mu, log_std.clamp(-5, 2).exp())
    u = dist.rsample()
    return torch.tanh(u), (dist.log_prob(u) - 2 * (np.log(2) - u - F.softplus(-2 * u))).sum(-1)

keys = ("o", "o2", "a", "r", "d")
sizes, dtypes = (shape, shape, (A,), (), ()), (np.uint8, np.uint8, np.float32, np.float32, np.float32)
buf = {k: np.zeros((args.steps, *size), dtype) for k, size, dtype in zip(keys, sizes, dtypes)}
(obs, _), returns, ep_ret, atc_losses = env.reset(), [], 0.0, []
for t in range(args.steps):
    with torch.no_grad():
        action = env.action_space.sample() if t < args.start else policy(features(obs[None]))[0][0].numpy()
    next_obs, reward, term, trunc, _ = env.step(action)
    for k, v in zip(keys, (obs, next_obs, action, reward, term)):
        buf[k][t] = v
    obs, ep_ret = next_obs, ep_ret + reward
    if term or trunc:
        returns.append(ep_ret)
        (obs, _), ep_ret = env.reset(), 0.0
    if t < args.start:
        continue
    i = rng.integers(t + 1, size=args.batch)
    o, o2, a, r, d = (torch.as_tensor(buf[k][i]) for k in keys)
    loss_atc, metrics = atc(o, o2)  # ATC on (o_t, o_t+1) trains the encoder; no RL gradient reaches it
    opt_atc.zero_grad(); loss_atc.backward(); opt_atc.step(); atc.update_target()
    atc_losses.append(metrics["ul/loss"])
    with torch.no_grad():
        z, z2 = features(o), features(o2)
        a2, logp2 = policy(z2)
        target = r + 0.99 * (1 - d) * (q_min(q1_t, q2_t, z2, a2) - log_alpha.exp() * logp2)
    q_loss = sum(F.mse_loss(q(torch.cat([z, a], 1)).squeeze(1), target) for q in (q1, q2))
    opt_q.zero_grad(); q_loss.backward(); opt_q.step()
    a_pi, logp = policy(z)
    pi_loss = (log_alpha.exp().detach() * logp - q_min(q1, q2, z, a_pi)).mean()
    opt_pi.zero_grad(); pi_loss.backward(); opt_pi.step()
    alpha_loss = -(log_alpha * (logp.detach() - A)).mean()  # target entropy -|A|
    opt_alpha.zero_grad(); alpha_loss.backward(); opt_alpha.step()
    with torch.no_grad():
        for w, w_t in zip(critics, critic_targets):
            w_t.lerp_(w, 0.01)
print(json.dumps({"episode_returns": returns, "atc_losses": atc_losses[:: max(1, len(atc_losses) // 20)],
                  "atc_accuracy": metrics["ul/accuracy"], "q_loss": float(q_loss.detach())}))
