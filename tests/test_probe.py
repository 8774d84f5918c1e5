import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from atcrl.cli import main as atcrl
from atcrl.data.dataset import DatasetWriter, open_dataset
from atcrl.data.episode import Episode, stack_indices, stacked_frames
from atcrl.encoder_io import export_encoder
from atcrl.envs import make_env
from atcrl.nets.encoders import ConvEncoder
from atcrl.train.collect import collect_episodes, random_policy
from atcrl.train.probe import (
    bootstrap_r2,
    encode_episodes,
    episode_resample_counts,
    fit_ridge,
    kernel_ridge_predict,
    linear_probe,
    moments,
    r2_scores,
    ridge_from_moments,
    split_episodes,
)
from atcrl.train.probe_cli import subsample
from atcrl.train.probe_targets import HINGE, SLIDE, Joint, joint_targets, targets_of


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
    w_dual, _ = fit_ridge(x, y, 3.0)  # d > n: dual path
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


# --- kernel-form ridge, feature scaling, frame subsampling --------------------------------------


def test_kernel_ridge_predicts_what_the_primal_fit_predicts():
    rng = np.random.default_rng(5)
    x, y, x_eval = rng.normal(size=(40, 300)) + 2.0, rng.normal(size=(40, 3)), rng.normal(size=(7, 300))
    alphas = (1e-2, 1.0, 100.0)
    for alpha, predicted in zip(alphas, kernel_ridge_predict(x @ x.T, x_eval @ x.T, y, alphas)):
        w, b = fit_ridge(x, y, alpha)
        np.testing.assert_allclose(predicted, x_eval @ w + b, rtol=1e-6, atol=1e-8)


def test_moment_sums_give_the_same_fit_as_the_rows():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(90, 12)) + 1.0, rng.normal(size=(90, 2))
    parts = [moments(x[:40], y[:40]), moments(x[40:], y[40:])]
    summed = tuple(a + b for a, b in zip(*parts))
    for alpha, (w, b) in zip((1e-3, 10.0), ridge_from_moments(summed, (1e-3, 10.0))):
        w_ref, b_ref = fit_ridge(x, y, alpha)
        np.testing.assert_allclose(w, w_ref, atol=1e-8)
        np.testing.assert_allclose(b, b_ref, atol=1e-8)


def test_wide_features_use_the_kernel_form_and_still_recover_a_linear_signal():
    # Like conv features: many dimensions, all driven by a few underlying factors (plus noise).
    rng = np.random.default_rng(6)
    z = rng.normal(size=(300, 4))
    x = z @ rng.normal(size=(4, 2000)) + 0.5 * rng.normal(size=(300, 2000))
    y = z[:, :2] @ np.array([[1.0, 0.5], [-2.0, 1.0]])
    res = linear_probe((x[:200], y[:200]), (x[200:], y[200:]))
    assert res.n_train == 200 and min(res.r2) > 0.9


def test_a_unit_silent_in_training_frames_cannot_blow_up_test_predictions():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 30))
    y = x[:, :2].copy()
    x[:300, 29] = 0.0
    x[5, 29] = 1e-4  # fires once, faintly, in training: its std is ~5e-6
    x[300:, 29] = 5.0  # and strongly in every test frame
    for alpha in (1e-3, 1.0, 100.0):
        assert min(linear_probe((x[:300], y[:300]), (x[300:], y[300:]), alphas=(alpha,)).r2) > 0.9


def test_subsample_spreads_frames_evenly_over_episodes():
    lengths = [10, 30, 60]
    assert [len(t) for t in subsample(lengths, 1000)] == lengths
    times = subsample(lengths, 20)
    assert sum(len(t) for t in times) == 20 and [len(t) for t in times] == [2, 6, 12]
    assert all(t.min() >= 0 and t.max() < n and len(set(t)) == len(t) for t, n in zip(times, lengths))


# --- atcrl probe ---------------------------------------------------------------------------------


def record(root, spec="tiny:point", episodes=8, seed=0, size=32):
    space = make_env(spec, image_size=size).action_space
    return collect_episodes(spec, episodes, random_policy(space), out=root, seed=seed, image_size=size,
                            progress=False)


@pytest.fixture(scope="module")
def point(tmp_path_factory):
    return record(tmp_path_factory.mktemp("probe") / "point")


def run_probe_cli(*args):
    return atcrl(["probe", *map(str, args)])


def test_cli_probes_every_physics_dim_on_held_out_episodes_and_writes_json(point, tmp_path, capsys):
    assert run_probe_cli("--encoder", "random", "--data", point, "--out", tmp_path / "r.json") == 0
    printed = capsys.readouterr().out
    assert "random dmc encoder (seed 0)" in printed and "6 train / 2 test episodes" in printed
    body = json.loads((tmp_path / "r.json").read_text())
    task = body["tasks"]["tiny:point"]
    assert len(task["r2"]) == 4 and task["n_train"] == 6 * 51 and task["n_test"] == 2 * 51
    assert f"{task['mean_r2']:7.3f}" in printed and body["mean_r2"] == task["mean_r2"]
    assert task["frames_fraction"] == 1.0


def test_cli_random_encoder_is_the_one_pretrain_exports_for_objective_random(point, tmp_path):
    assert atcrl(["pretrain", "--data", str(point), "--objective", "random", "--seed", "3",
                  "--out", str(tmp_path / "run"), "--no-tensorboard"]) == 0
    assert run_probe_cli("--encoder", tmp_path / "run", "--data", point, "--out", tmp_path / "a.json") == 0
    assert run_probe_cli("--encoder", "random", "--seed", "3", "--data", point, "--out", tmp_path / "b.json") == 0
    a, b = (json.loads((tmp_path / f).read_text())["tasks"]["tiny:point"] for f in ("a.json", "b.json"))
    assert a["r2"] == b["r2"]
    assert run_probe_cli("--encoder", "random", "--seed", "4", "--data", point, "--out", tmp_path / "c.json") == 0
    assert json.loads((tmp_path / "c.json").read_text())["tasks"]["tiny:point"]["r2"] != a["r2"]


def test_cli_max_frames_subsamples(point, tmp_path, capsys):
    assert run_probe_cli("--encoder", "random", "--data", point, "--max-frames", "100",
                         "--out", tmp_path / "r.json") == 0
    task = json.loads((tmp_path / "r.json").read_text())["tasks"]["tiny:point"]
    assert task["n_train"] + task["n_test"] == 100 and task["frames_fraction"] == pytest.approx(100 / 408)
    assert "25% of frames" in capsys.readouterr().out


def test_cli_errors_name_the_problem(point, tmp_path, capsys):
    def fails(*args, needles):
        assert run_probe_cli(*args) == 2
        err = capsys.readouterr().err
        assert all(n in err for n in needles), err

    export_encoder(ConvEncoder("dmc", (9, 40, 40)), tmp_path / "enc40", objective="test", data=[])
    fails("--encoder", tmp_path / "enc40", "--data", point, needles=["(9, 40, 40)", "(9, 32, 32)"])
    fails("--encoder", tmp_path / "missing", "--data", point, needles=["missing"])
    one = record(tmp_path / "one", episodes=1)
    fails("--encoder", "random", "--data", one, needles=["at least 2 episodes", "tiny:point"])
    ds = open_dataset(point)
    writer = DatasetWriter(tmp_path / "blind", replace(ds.meta, physics_dim=None))
    for ep in ds:
        writer.add(replace(ep, physics=None))
    fails("--encoder", "random", "--data", tmp_path / "blind", needles=["no physics state", "blind"])
    catch = record(tmp_path / "catch", "tiny:catch", episodes=2)
    fails("--encoder", "random", "--data", point, catch, needles=["different observation shapes"])
    fails("--encoder", "random", "--data", tmp_path / "nowhere", needles=["no dataset at"])


# --------------------------------------------------------------------------- hinge targets, intervals, baseline


def wrapped_angle_case(n_episodes=40, frames=50, seed=0):
    """Features that are a linear image of (sin, cos) of an angle that winds past ±π; rows episode by episode."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(-np.pi, np.pi, n_episodes)
    angle = (start[:, None] + np.linspace(0, 2 * np.pi, frames)[None]).reshape(-1)
    wrapped = (angle + np.pi) % (2 * np.pi) - np.pi
    mix = rng.normal(size=(2, 16))
    x = np.stack([np.sin(angle), np.cos(angle)], 1) @ mix + 0.01 * rng.normal(size=(len(angle), 16))
    velocity = np.full_like(wrapped, 2 * np.pi / frames)
    return x, np.stack([wrapped, velocity], 1), [frames] * n_episodes


def test_a_wrapping_hinge_angle_defeats_a_linear_probe_but_its_sin_cos_do_not():
    x, physics, lengths = wrapped_angle_case()
    hinge = joint_targets([Joint("shoulder", HINGE, 0, 0)], nq=1, nv=1, na=0, physics_dim=2)
    assert hinge.names == ("shoulder.sin", "shoulder.cos", "shoulder.vel")
    cut = 30 * 50
    raw = linear_probe((x[:cut], physics[:cut, :1]), (x[cut:], physics[cut:, :1]))
    sin_cos = hinge.apply(physics)[:, :2]
    fair = linear_probe((x[:cut], sin_cos[:cut]), (x[cut:], sin_cos[cut:]), test_lengths=lengths[30:])
    # The wrapped angle is a sawtooth of the pose: the best linear read-out of it (its first Fourier term)
    # explains 6/π² ≈ 0.61 of its variance, whatever the features.
    assert raw.mean_r2 < 0.65
    assert min(fair.r2) > 0.99 and fair.resampled_episodes == 10


def test_joint_targets_name_hinges_slides_velocities_and_actuators():
    joints = [Joint("slider", SLIDE, 0, 0), Joint("pole", HINGE, 1, 1)]
    t = joint_targets(joints, nq=2, nv=2, na=1, physics_dim=6)
    assert t.names == ("slider", "pole.sin", "pole.cos", "slider.vel", "pole.vel", "act[0]", "physics[5]")
    phys = np.array([[0.5, np.pi / 2, 1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(t.apply(phys), [[0.5, 1.0, 0.0, 1.0, 2.0, 3.0, 4.0]], atol=1e-12)
    with pytest.raises(ValueError, match="fewer than the model"):
        joint_targets(joints, nq=2, nv=2, na=1, physics_dim=4)
    with pytest.raises(ValueError, match="do not add up"):
        joint_targets(joints, nq=3, nv=2, na=0, physics_dim=6)


def test_dmc_targets_come_from_the_model_joint_types():
    assert targets_of("dmc:cartpole-swingup", 4).names == ("slider", "hinge_1.sin", "hinge_1.cos",
                                                           "slider.vel", "hinge_1.vel")
    assert targets_of("dmc:reacher-easy", 4).names[:4] == ("shoulder.sin", "shoulder.cos", "wrist.sin", "wrist.cos")
    assert targets_of("tiny:point", 2).names == ("physics[0]", "physics[1]")


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_episodes():
    widths = []
    for n_episodes in (10, 160):
        rng = np.random.default_rng(n_episodes)
        y = rng.normal(size=(n_episodes * 20, 2))
        pred = y + rng.normal(scale=0.7, size=y.shape) + np.repeat(rng.normal(scale=0.5, size=(n_episodes, 2)), 20, 0)
        (low, high), (mlow, mhigh) = bootstrap_r2(y, pred, [20] * n_episodes)
        point_r2 = r2_scores(y, pred)
        assert ((low <= point_r2) & (point_r2 <= high)).all() and mlow <= point_r2.mean() <= mhigh
        widths.append((high - low).mean())
    assert widths[1] < widths[0] / 2  # 16x the episodes: about a quarter of the width


def test_bootstrap_resamples_whole_episodes_not_frames():
    # Two episodes: every resample is (ep0, ep0), (ep0, ep1) or (ep1, ep1), so R² takes at most three values.
    rng = np.random.default_rng(0)
    y, pred = rng.normal(size=(60, 1)), rng.normal(size=(60, 1))
    counts = episode_resample_counts(2, 500)
    assert counts.shape == (500, 2) and (counts.sum(1) == 2).all()
    r2 = []
    for c in counts[:50]:
        rows = np.concatenate([np.arange(e * 30, e * 30 + 30) for e in range(2) for _ in range(c[e])])
        r2.append(round(float(r2_scores(y[rows], pred[rows])[0]), 9))
    assert len(set(r2)) <= 3
    (low, high), _ = bootstrap_r2(y, pred, [30, 30])
    assert {round(float(low[0]), 9), round(float(high[0]), 9)} <= set(r2)
    with pytest.raises(ValueError, match="lengths sum to"):
        bootstrap_r2(y, pred, [30, 20])


def test_cli_baseline_random_prints_both_with_intervals_and_writes_them(point, tmp_path, capsys):
    assert atcrl(["pretrain", "--data", str(point), "--objective", "random", "--seed", "3",
                  "--out", str(tmp_path / "run"), "--no-tensorboard"]) == 0
    assert run_probe_cli("--encoder", tmp_path / "run", "--data", point, "--baseline", "random", "--seed", "0",
                         "--out", tmp_path / "r.json") == 0
    printed = capsys.readouterr().out
    assert "beside the random dmc encoder (seed 0)" in printed and "interval over 2 test episodes" in printed
    body = json.loads((tmp_path / "r.json").read_text())
    task, base = body["tasks"]["tiny:point"], body["baseline"]["tasks"]["tiny:point"]
    assert task["targets"] == ["physics[0]", "physics[1]", "physics[2]", "physics[3]"]
    assert task["test_episodes"] == 2 and len(task["r2_ci"]) == 4 and len(base["r2_ci"]) == 4
    assert all(lo <= hi for lo, hi in task["r2_ci"])  # (2 test episodes: too few to ask it to hold the estimate)
    assert run_probe_cli("--encoder", "random", "--seed", "0", "--data", point, "--out", tmp_path / "b.json") == 0
    assert json.loads((tmp_path / "b.json").read_text())["tasks"]["tiny:point"]["r2"] == base["r2"]
    assert task["r2"] != base["r2"]
    with pytest.raises(SystemExit):
        run_probe_cli("--encoder", "random", "--data", point, "--baseline", "random")
    assert "--encoder is random already" in capsys.readouterr().err
