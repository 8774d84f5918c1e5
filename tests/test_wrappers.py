"""EncodedObservation / EncodedVectorObservation: gymnasium's env checker, features equal the encoder's, batching."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from atcrl.envs import make_env, make_vec_env
from atcrl.envs.tiny import TinyCatch
from atcrl.nets.encoders import ConvEncoder
from atcrl.pretrained import PretrainedEncoder
from atcrl.wrappers import EncodedObservation, EncodedVectorObservation

SIZE = 40  # the smallest convenient image for the dmc encoder (features 32 x 2 x 2)


def _encoder(spec: str) -> ConvEncoder:
    torch.manual_seed(0)
    return ConvEncoder("dmc", make_env(spec, image_size=SIZE).observation_space.shape)


@pytest.mark.parametrize("spec", ["tiny:catch", "tiny:point"])
@pytest.mark.parametrize("latent", [False, True])
def test_check_env_passes_and_space_matches(spec, latent):
    encoder = _encoder(spec)
    env = EncodedObservation(make_env(spec, image_size=SIZE), PretrainedEncoder(encoder), latent=latent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not the unwrapped env" and "Box high is inf" are expected notes
        check_env(env, skip_render_check=True)
    expected = encoder.feature_shape if latent else (encoder.feature_dim,)
    assert env.observation_space.shape == expected and env.observation_space.dtype == np.float32
    obs, _ = env.reset(seed=3)
    assert obs.shape == expected and env.observation_space.contains(obs)


def test_features_are_the_encoders_features_of_the_pixels():
    encoder = _encoder("tiny:point")
    raw, wrapped = make_env("tiny:point", image_size=SIZE), make_env("tiny:point", image_size=SIZE)
    env = EncodedObservation(wrapped, encoder)
    pixels, _ = raw.reset(seed=5)
    feats, _ = env.reset(seed=5)
    with torch.no_grad():
        want = encoder(torch.as_tensor(pixels[None])).flatten(1)[0].numpy()
    np.testing.assert_array_equal(feats, want)
    action = np.array([0.5, -0.5], np.float32)
    pixels, *_ = raw.step(action)
    feats, *_ = env.step(action)
    with torch.no_grad():
        np.testing.assert_array_equal(feats, encoder(torch.as_tensor(pixels[None])).flatten(1)[0].numpy())
    assert not np.array_equal(feats, want), "the features did not change with the observation"


def test_vector_wrapper_encodes_batches_and_final_observations():
    encoder = _encoder("tiny:catch")
    raw = make_vec_env("tiny:catch", 3, seed=1, image_size=SIZE)
    vec = EncodedVectorObservation(make_vec_env("tiny:catch", 3, seed=1, image_size=SIZE), encoder)
    assert vec.observation_space.shape == (3, encoder.feature_dim)
    assert vec.single_observation_space.shape == (encoder.feature_dim,)

    def enc(pixels):
        with torch.no_grad():
            return encoder(torch.as_tensor(np.stack(pixels))).flatten(1).numpy()

    pixels, _ = raw.reset()
    feats, _ = vec.reset()
    np.testing.assert_array_equal(feats, enc(pixels))
    assert vec.observation_space.contains(feats)
    saw_final = False
    for _ in range(TinyCatch.rows):  # every catch episode ends within rows - 1 steps
        actions = np.array([0, 1, 2])
        pixels, _, term, _, raw_info = raw.step(actions)
        feats, _, term_w, _, info = vec.step(actions)
        np.testing.assert_array_equal(feats, enc(pixels))
        np.testing.assert_array_equal(term, term_w)
        if "final_obs" in info:
            saw_final = True
            rows = np.flatnonzero(info["_final_obs"])
            got = np.stack([info["final_obs"][i] for i in rows])
            np.testing.assert_array_equal(got, enc([raw_info["final_obs"][i] for i in rows]))
    assert saw_final


def test_wrong_observation_shape_is_one_clear_error():
    encoder = _encoder("tiny:point")  # 9 channels; catch has 4
    with pytest.raises(ValueError, match=r"reads observations of shape \(9, 40, 40\).*frame stack and image size"):
        EncodedObservation(make_env("tiny:catch", image_size=SIZE), encoder)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_features_are_computed_on_the_encoders_device():
    encoder = _encoder("tiny:catch").cuda()
    env = EncodedObservation(make_env("tiny:catch", image_size=SIZE), encoder)
    raw = make_env("tiny:catch", image_size=SIZE)
    feats, _ = env.reset(seed=0)
    pixels, _ = raw.reset(seed=0)
    with torch.no_grad():
        want = encoder(torch.as_tensor(pixels[None]).cuda()).flatten(1)[0].cpu().numpy()
    np.testing.assert_allclose(feats, want, rtol=0, atol=0)
