"""Linear probes: how much of the recorded physics state a frozen encoder's features hold.

Closed-form ridge regression from features to the low-dimensional state, fitted on some
episodes and scored (R^2 per state dimension) on held-out episodes. No RL run is needed, so
it is the quick yardstick of encoder quality.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch

from atcrl.data.episode import Episode, stacked_frames
from atcrl.nets.encoders import ConvEncoder

DEFAULT_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


@dataclass(frozen=True)
class ProbeResult:
    r2: tuple[float, ...]
    """R^2 on held-out episodes, one per physics-state dimension."""
    alpha: float
    """Ridge strength picked by cross-validation over blocks of training episodes."""
    n_train: int
    n_test: int
    r2_ci: tuple[tuple[float, float], ...] | None = None
    """Per dimension, the bootstrap 95% interval of its R^2 over test episodes (None: not computed)."""
    mean_r2_ci: tuple[float, float] | None = None
    """The bootstrap 95% interval of the mean R^2 over dimensions, from the same resamples."""
    resampled_episodes: int | None = None
    """Test episodes (with frames kept) the intervals resampled."""

    @property
    def mean_r2(self) -> float:
        return float(np.mean(self.r2))


@torch.no_grad()
def encode_episodes(
    encoder: ConvEncoder, episodes: Iterable[Episode], frame_stack: int, *, batch_size: int = 256,
    device: str | torch.device = "cpu", times: Sequence[np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flattened features [N, D] for every frame of every episode, with its physics state [N, S].

    times: per episode, the frame indices to encode (None = all frames); progress(n) is called
    after each batch of n frames.
    """
    encoder = encoder.to(device).eval()
    feats, states = [], []
    for i, ep in enumerate(episodes):
        if ep.physics is None:
            raise ValueError("a probe needs the physics state in the dataset; this episode has none "
                             f"(task {ep.task or 'unknown'}); record it with an env that exposes physics")
        chosen = np.arange(len(ep.frames)) if times is None else np.asarray(times[i], np.int64)
        for start in range(0, len(chosen), batch_size):
            t = chosen[start : start + batch_size]
            obs = torch.from_numpy(stacked_frames(ep.frames, t, frame_stack)).to(device)
            feats.append(encoder(obs).flatten(1).float().cpu().numpy())
            if progress is not None:
                progress(len(t))
        states.append(ep.physics[chosen])
    if not feats:
        raise ValueError("no frames to encode")
    return np.concatenate(feats).astype(np.float64), np.concatenate(states).astype(np.float64)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias minimising ||x w + b - y||^2 + alpha ||w||^2 (the bias is not penalised).

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


def solve_path(a: np.ndarray, rhs: np.ndarray, alphas: Sequence[float]) -> list[np.ndarray]:
    """(a + alpha I)^-1 rhs for every alpha.

    One solve per alpha: on conv features (rank-deficient, clustered spectrum) that measured faster
    than one shared eigendecomposition for the ~10 alphas of a probe.
    """
    eye = np.eye(len(a))
    return [np.linalg.solve(a + alpha * eye, rhs) for alpha in alphas]


def kernel_ridge_predict(
    k_fit: np.ndarray, k_eval: np.ndarray, y_fit: np.ndarray, alphas: Sequence[float]
) -> list[np.ndarray]:
    """What ``fit_ridge`` on the fit rows predicts for the eval rows, per alpha, from Gram matrices alone.

    k_fit = X_fit X_fitᵀ [n, n], k_eval = X_eval X_fitᵀ [m, n]. Centring by the fit rows' mean (the
    unpenalised bias) is done on the kernels, so one Gram matrix of all training rows serves every
    alpha and every subset of them: the cost is one n x n x D product instead of one per fit.
    """
    col = k_fit.mean(0)
    total = col.mean()
    kc_fit = k_fit - col[:, None] - col[None, :] + total
    kc_eval = k_eval - k_eval.mean(1, keepdims=True) - col[None, :] + total
    y_mean = y_fit.mean(0)
    return [kc_eval @ beta + y_mean for beta in solve_path(kc_fit, y_fit - y_mean, alphas)]


def r2_scores(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column; a constant column scores 1 if predicted exactly, else 0.

    A column with a NaN/Inf target or prediction scores NaN: it is never turned into a number.
    """
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    return r2_from_sums(ss_res, ss_tot, np.isfinite(y_true).all(0) & np.isfinite(y_pred).all(0))


def r2_from_sums(ss_res: np.ndarray, ss_tot: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """1 - ss_res / ss_tot; a constant column (ss_tot ~ 0) scores 1 if predicted exactly, else 0; NaN where not
    ``finite`` (a column with a NaN/Inf target or prediction)."""
    safe = np.where(ss_tot > 1e-12, ss_tot, 1.0)
    scores = np.where(ss_tot > 1e-12, 1.0 - ss_res / safe, (ss_res < 1e-12).astype(float))
    return np.where(finite, scores, np.nan)


Moments = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(n, Σx, Σy, Σx xᵀ, Σx yᵀ) of a set of rows: all a primal ridge fit needs, and additive over rows."""


def moments(x: np.ndarray, y: np.ndarray) -> Moments:
    return len(x), x.sum(0), y.sum(0), x.T @ x, x.T @ y


def ridge_from_moments(m: Moments, alphas: Sequence[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``fit_ridge`` on the rows summarised by ``m``, per alpha (so a fit on all-but-one fold needs no
    pass over the rows)."""
    n, sx, sy, sxx, sxy = m
    x_mean, y_mean = sx / n, sy / n
    cxx, cxy = sxx - n * np.outer(x_mean, x_mean), sxy - n * np.outer(x_mean, y_mean)
    return [(w, y_mean - x_mean @ w) for w in solve_path(cxx, cxy, alphas)]


BOOTSTRAP_RESAMPLES = 2000
"""Resamples of the test episodes behind each probe's 95% intervals."""


def episode_resample_counts(n_episodes: int, resamples: int, seed: int = 0) -> np.ndarray:
    """[resamples, n_episodes]: how often each episode is drawn in each resample (n_episodes draws with
    replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_episodes, np.full(n_episodes, 1.0 / n_episodes), size=resamples)


def bootstrap_r2(
    y_true: np.ndarray, y_pred: np.ndarray, lengths: Sequence[int], *, resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0, level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap of R^2 over whole test episodes (frames of one episode are not independent).

    Rows are episode by episode, ``lengths`` frames each. Each resample draws as many episodes as there
    are, with replacement, and scores R^2 on all their frames. Returns the (low, high) bounds [2, S] of
    the per-column R^2 and [2] of their mean. Done from per-episode sums, so a resample costs no pass
    over the frames.
    """
    lengths = np.asarray(lengths, np.int64)
    if lengths.sum() != len(y_true) or (lengths < 1).any():
        raise ValueError(f"episode lengths sum to {lengths.sum()}, but there are {len(y_true)} rows")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    yc = y_true - y_true.mean(0)  # centred: the sums of squares below lose no precision
    res2, y2 = np.add.reduceat((y_true - y_pred) ** 2, starts), np.add.reduceat(yc**2, starts)
    y1 = np.add.reduceat(yc, starts)
    counts = episode_resample_counts(len(lengths), resamples, seed).astype(np.float64)
    n = counts @ lengths
    ss_tot = counts @ y2 - (counts @ y1) ** 2 / n[:, None]
    r2 = r2_from_sums(counts @ res2, ss_tot, np.isfinite(y_true).all(0) & np.isfinite(y_pred).all(0))
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return np.percentile(r2, q, axis=0), np.percentile(r2.mean(1), q)


def linear_probe(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
    alphas: Sequence[float] = DEFAULT_ALPHAS, folds: int = 5, *, test_lengths: Sequence[int] | None = None,
) -> ProbeResult:
    """``probe_predictions`` scored as R^2 per column; with ``test_lengths`` (frames per test episode, in
    row order) also bootstrap 95% intervals over the test episodes."""
    alpha, pred = probe_predictions(train, test, alphas, folds)
    y_te = test[1]
    r2 = tuple(float(v) for v in r2_scores(y_te, pred))
    if test_lengths is None:
        return ProbeResult(r2, alpha, len(train[0]), len(y_te))
    per_col, mean = bootstrap_r2(y_te, pred, test_lengths)
    return ProbeResult(r2, alpha, len(train[0]), len(y_te), tuple((float(a), float(b)) for a, b in per_col.T),
                       (float(mean[0]), float(mean[1])), len(test_lengths))


def probe_predictions(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
    alphas: Sequence[float] = DEFAULT_ALPHAS, folds: int = 5,
) -> tuple[float, np.ndarray]:
    """(alpha, test predictions): pick alpha by cross-validation on the training rows, refit on all of them,
    predict the test rows.

    The folds are contiguous blocks of training rows; rows come episode by episode, so each fold is
    a run of whole episodes (cut at most at its two ends) and alpha is chosen for generalising to
    other episodes, as the test asks. Wide features (more dimensions than training rows) are solved
    in kernel form from one Gram matrix, narrow ones from per-fold moment sums.
    """
    (x_tr, y_tr), (x_te, _) = train, test
    n = len(x_tr)
    if n < 2:
        raise ValueError(f"a probe needs at least 2 training rows, got {n}")
    # Centre each feature but scale all by one number (unit mean variance), so the alpha grid has a
    # fixed meaning. Per-feature standardisation would blow up ReLU units that almost never fire in
    # the training frames (std ~ 0) whenever they do fire in a test frame.
    # Features constant over the training rows (dead ReLU units) get weight 0 in any ridge fit, so
    # dropping them changes no prediction and makes every solve smaller.
    alive = np.ptp(x_tr, axis=0) > 0
    x_tr, x_te = x_tr[:, alive], x_te[:, alive]
    mu = x_tr.mean(0)
    x_tr -= mu
    scale = float(np.sqrt((x_tr**2).mean())) + 1e-12
    x_tr /= scale  # in place (x_tr is a fresh copy): the feature matrices are the probe's largest memory cost
    x_te -= mu
    x_te /= scale
    edges = np.linspace(0, n, min(folds, n) + 1).round().astype(np.int64)
    blocks = [np.arange(a, b) for a, b in pairwise(edges)]

    # predict(i, alphas): fit without block i and predict block i, once per alpha;
    # i = None fits all training rows and predicts the test rows.
    if x_tr.shape[1] > n:
        gram, k_test = x_tr @ x_tr.T, x_te @ x_tr.T

        def predict(i: int | None, alphas: Sequence[float]) -> list[np.ndarray]:
            if i is None:
                return kernel_ridge_predict(gram, k_test, y_tr, alphas)
            rest = np.setdiff1d(np.arange(n), blocks[i])
            return kernel_ridge_predict(gram[np.ix_(rest, rest)], gram[np.ix_(blocks[i], rest)], y_tr[rest], alphas)
    else:
        per_block = [moments(x_tr[b], y_tr[b]) for b in blocks]
        total = tuple(sum(parts) for parts in zip(*per_block))

        def predict(i: int | None, alphas: Sequence[float]) -> list[np.ndarray]:
            if i is None:
                return [x_te @ w + b for w, b in ridge_from_moments(total, alphas)]
            rest = tuple(t - f for t, f in zip(total, per_block[i]))
            return [x_tr[blocks[i]] @ w + b for w, b in ridge_from_moments(rest, alphas)]

    out_of_fold = [np.concatenate(per_fold) for per_fold in zip(*(predict(i, alphas) for i in range(len(blocks))))]
    scores = [float(r2_scores(y_tr, pred).mean()) for pred in out_of_fold]
    best = alphas[int(np.argmax(scores))]
    return float(best), predict(None, [best])[0]


def split_episodes(n: int, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Episode indices for (train, test); at least one episode on each side."""
    if n < 2:
        raise ValueError(f"a probe needs at least 2 episodes (one to fit, one to test), got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])
