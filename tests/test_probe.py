import numpy as np
import pytest
import torch

from atcrl.data.episode import Episode, stack_indices, stacked_frames
from atcrl.nets.encoders import ConvEncoder
from atcrl.train.probe import encode_episodes, fit_ridge, linear_probe, r2_scores, split_episodes


def test_ridge_recovers_linear_map_and_r2_is_near_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 20))
    w = rng.normal(size=(20, 3))
    y = x @ w + 0.5
    res = linear_probe((x[:300], y[:300]), (x[300:], y[300:]))
    assert min(res.r2) > 0.999
    w_hat, b_hat = fit_ridge(x, y, 1e-9)
    np.testing.assert_allclose(w_hat, w, atol=1e-6)
    np.testing.assert_allclose(b_hat, 0.5, atol=1e-6)


def test_ridge_dual_form_matches_primal():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 50)), rng.normal(size=(30, 2))
    w_dual, b_dual = fit_ridge(x, y, 3.0)  # d > n: dual path
    xc, yc = x - x.mean(0), y - y.mean(0)
    w_primal = np.linalg.solve(xc.T @ xc + 3.0 * np.eye(50), xc.T @ yc)
    np.testing.assert_allclose(w_dual, w_primal, atol=1e-8)


def test_unrelated_targets_score_near_zero():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(600, 10)), rng.normal(size=(600, 2))
    res = linear_probe((x[:400], y[:400]), (x[400:], y[400:]))
    assert res.mean_r2 < 0.05


def test_r2_handles_constant_columns():
    y = np.stack([np.ones(5), np.arange(5.0)], 1)
    assert r2_scores(y, y).tolist() == [1.0, 1.0]
    assert r2_scores(y, y + 1)[0] == 0.0


def test_split_episodes_is_disjoint_and_rejects_too_few():
    tr, te = split_episodes(10, 0.3, seed=4)
    assert len(set(tr) & set(te)) == 0 and len(tr) + len(te) == 10 and len(te) == 3
    with pytest.raises(ValueError, match="at least 2 episodes"):
        split_episodes(1, 0.5)


def test_stacked_frames_repeat_first_frame_and_are_oldest_first():
    frames = np.arange(4, dtype=np.uint8)[:, None, None, None] * np.ones((4, 2, 3, 3), np.uint8)
    obs = stacked_frames(frames, np.array([0, 2]), k=3)
    assert obs.shape == (2, 6, 3, 3)
    assert obs[0, ::2, 0, 0].tolist() == [0, 0, 0]
    assert obs[1, ::2, 0, 0].tolist() == [0, 1, 2]
    assert stack_indices(np.array(1), 3).tolist() == [0, 0, 1]


def test_encode_episodes_pairs_each_frame_with_its_state_and_requires_physics():
    rng = np.random.default_rng(0)
    eps = [
        Episode(rng.integers(0, 255, (n + 1, 3, 84, 84), dtype=np.uint8), np.zeros((n, 1), np.float32),
                np.zeros(n, np.float32), False, True, physics=np.arange(n + 1, dtype=np.float64)[:, None])
        for n in (5, 7)
    ]
    enc = ConvEncoder("dmc", (9, 84, 84))
    x, y = encode_episodes(enc, eps, frame_stack=3, batch_size=4)
    assert x.shape == (14, 1568) and y[:, 0].tolist() == list(range(6)) + list(range(8))
    with torch.no_grad():
        direct = enc(torch.from_numpy(stacked_frames(eps[1].frames, np.array([3]), 3))).flatten(1).numpy()
    np.testing.assert_allclose(x[6 + 3], direct[0], rtol=1e-5, atol=1e-6)
    eps[0].physics = None
    with pytest.raises(ValueError, match="physics"):
        encode_episodes(enc, eps, frame_stack=3)
