"""`atcrl export --format onnx`: onnxruntime's features equal torch's within 1e-5 on real observations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import atcrl
from atcrl.cli import main
from atcrl.nets.encoders import ConvEncoder
from atcrl.onnx_export import export_onnx, onnx_path, read_onnx_info

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SIZE = 40


def _observations(spec: str, n: int) -> np.ndarray:
    """n consecutive real observations of a random-policy episode stream."""
    env = atcrl.make_env(spec, image_size=SIZE, seed=0)
    obs, _ = env.reset()
    frames = [obs]
    while len(frames) < n:
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        frames.append(obs)
        if term or trunc:
            frames.append(env.reset()[0])
    return np.stack(frames[:n])


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    data = atcrl.collect("tiny:catch", episodes=6, out=root / "catch", image_size=SIZE)
    return atcrl.pretrain(data, out=str(root / "run"), updates=30, batch_size=16, val_fraction=0,
                          objective_args={"latent_size": 16}, tensorboard=False, device="cpu")


def test_cli_onnx_export_matches_torch_on_real_observations(pretrain_run, tmp_path, capsys):
    out = tmp_path / "atc-catch.onnx"
    assert main(["export", "--run", str(pretrain_run.run_dir), "--out", str(out), "--format", "onnx"]) == 0
    encoder = atcrl.load_encoder(pretrain_run.encoder_path)  # the run's own export, from the same final weights
    info = read_onnx_info(out)
    assert info["in_shape"] == [4, SIZE, SIZE] and info["feature_dim"] == encoder.feature_dim
    assert info["objective"] == "atc" and info["extra"]["updates"] == 30
    session = ort.InferenceSession(str(out))
    obs = _observations("tiny:catch", 24)
    for batch in (obs[:1], obs):  # the batch size is dynamic
        got = session.run(["features"], {"obs": batch})[0]
        with torch.no_grad():
            want = encoder(batch).numpy()
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        assert np.abs(want).max() > 0.1  # the features are not trivially zero


def test_rgb_encoder_export_and_paths(tmp_path):
    torch.manual_seed(0)
    obs = _observations("tiny:point", 9)
    conv = ConvEncoder("dmc", obs.shape[1:]).eval()
    path = export_onnx(conv, tmp_path, objective="random", data=[])
    assert path == tmp_path / "encoder.onnx"
    got = ort.InferenceSession(str(path)).run(["features"], {"obs": obs})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, conv(torch.as_tensor(obs)).flatten(1).numpy(), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="ending in .onnx"):
        onnx_path(tmp_path / "encoder.safetensors")


def test_cli_refuses_a_non_onnx_path(pretrain_run, tmp_path, capsys):
    code = main(["export", "--run", str(pretrain_run.run_dir), "--out", str(tmp_path / "x.safetensors"),
                 "--format", "onnx"])
    assert code == 2 and "ending in .onnx" in capsys.readouterr().err
