"""Linear probes: how much of the recorded physics state a frozen encoder's features hold.

Closed-form ridge regression from features to the low-dimensional state, fitted on some
episodes and scored (R^2 per state dimension) on held-out episodes. No RL run is needed, so
it is the quick yardstick of encoder quality.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from atcrl.data.episode import Episode, stacked_frames
from atcrl.nets.encoders import ConvEncoder

DEFAULT_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


@dataclass(frozen=True)
class ProbeResult:
    r2: tuple[float, ...]
    """R^2 on held-out episodes, one per physics-state dimension."""
    alpha: float
    """Ridge strength picked on a validation split of the training episodes."""
    n_train: int
    n_test: int

    @property
    def mean_r2(self) -> float:
        return float(np.mean(self.r2))


@torch.no_grad()
def encode_episodes(
    encoder: ConvEncoder, episodes: Iterable[Episode], frame_stack: int, *, batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Flattened features [N, D] for every frame of every episode, with its physics state [N, S]."""
    encoder = encoder.to(device).eval()
    feats, states = [], []
    for ep in episodes:
        if ep.physics is None:
            raise ValueError("a probe needs the physics state in the dataset; this episode has none "
                             f"(task {ep.task or 'unknown'}); record it with an env that exposes physics")
        for start in range(0, len(ep.frames), batch_size):
            t = np.arange(start, min(start + batch_size, len(ep.frames)))
            obs = torch.from_numpy(stacked_frames(ep.frames, t, frame_stack)).to(device)
            feats.append(encoder(obs).flatten(1).float().cpu().numpy())
        states.append(ep.physics)
    return np.concatenate(feats).astype(np.float64), np.concatenate(states).astype(np.float64)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias minimising ||x w + b - y||^2 + alpha ||w||^2 (features pre-standardised).

    Solved in whichever of the primal (D x D) or dual (N x N) form is smaller.
    """
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    n, d = xc.shape
    if d <= n:
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(d), xc.T @ yc)
    else:
        w = xc.T @ np.linalg.solve(xc @ xc.T + alpha * np.eye(n), yc)
    return w, y_mean - x_mean @ w


def r2_scores(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column; a constant column scores 1 if predicted exactly, else 0."""
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    safe = np.where(ss_tot > 1e-12, ss_tot, 1.0)
    return np.where(ss_tot > 1e-12, 1.0 - ss_res / safe, (ss_res < 1e-12).astype(float))


def linear_probe(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
    alphas: Sequence[float] = DEFAULT_ALPHAS, val_fraction: float = 0.2,
) -> ProbeResult:
    """Pick alpha on the last ``val_fraction`` of the training rows, refit on all, score on test."""
    (x_tr, y_tr), (x_te, y_te) = train, test
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    n_val = max(1, int(len(x_tr) * val_fraction))
    fit_x, fit_y, val_x, val_y = x_tr[:-n_val], y_tr[:-n_val], x_tr[-n_val:], y_tr[-n_val:]

    def val_score(alpha: float) -> float:
        w, b = fit_ridge(fit_x, fit_y, alpha)
        return float(r2_scores(val_y, val_x @ w + b).mean())

    best = max(alphas, key=val_score)
    w, b = fit_ridge(x_tr, y_tr, best)
    r2 = r2_scores(y_te, x_te @ w + b)
    return ProbeResult(tuple(float(v) for v in r2), float(best), len(x_tr), len(x_te))


def split_episodes(n: int, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Episode indices for (train, test); at least one episode on each side."""
    if n < 2:
        raise ValueError(f"a probe needs at least 2 episodes (one to fit, one to test), got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])
