"""Encoders, MLPs and augmentations: shapes, init statistics, and the exact geometry of the shifts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from atcrl.nets.augment import random_shift, shift_bilinear, subpixel_shift
from atcrl.nets.encoders import ConvEncoder, check_input
from atcrl.nets.mlp import ResidualMLP, mlp


@pytest.mark.parametrize(
    "arch, in_shape, feature_shape",
    [("dmc", (9, 84, 84), (32, 7, 7)), ("atari", (4, 84, 84), (64, 7, 7)), ("dmlab", (3, 72, 96), (64, 7, 10))],
)
def test_encoder_feature_shapes(arch, in_shape, feature_shape):
    enc = ConvEncoder(arch, in_shape)
    assert enc.feature_shape == feature_shape
    assert enc.feature_dim == math.prod(feature_shape)
    out = enc(torch.randint(0, 256, (2, *in_shape), dtype=torch.uint8))
    assert out.shape == (2, *feature_shape) and out.dtype == torch.float32
    assert out.is_contiguous()  # whatever layout the convs use inside, callers may .view() the output


@pytest.mark.parametrize("arch, in_shape", [("dmc", (9, 84, 84)), ("dmlab", (3, 72, 96))])
def test_uint8_and_scaled_float_inputs_agree(arch, in_shape):
    torch.manual_seed(0)
    enc = ConvEncoder(arch, in_shape)
    x = torch.randint(0, 256, (3, *in_shape), dtype=torch.uint8)
    torch.testing.assert_close(enc(x), enc(x.float() / 255.0))
    # The uint8 path must scale: feeding the raw values as float gives something else.
    assert not torch.allclose(enc(x), enc(x.float()))


def test_dmlab_encoder_uses_residual_skips():
    torch.manual_seed(0)
    enc = ConvEncoder("dmlab", (3, 72, 96))
    x = torch.rand(2, 3, 72, 96)
    with torch.no_grad():
        for conv in enc.convs[2:]:
            conv.weight.zero_()
            conv.bias.fill_(-1.0)  # relu(conv(.)) == 0: only the skip path carries signal
        h = torch.relu(enc.convs[1](torch.relu(enc.convs[0](x))))
        torch.testing.assert_close(enc(x), h)


@pytest.mark.parametrize("arch, in_shape", [("dmc", (9, 84, 84)), ("atari", (4, 84, 84)), ("dmlab", (3, 72, 96))])
def test_encoder_kaiming_normal_init_and_zero_bias(arch, in_shape):
    torch.manual_seed(0)
    enc = ConvEncoder(arch, in_shape)
    for conv in enc.convs:
        w = conv.weight.detach().double()
        fan_in = w[0].numel()
        expected_std = math.sqrt(2.0 / fan_in)
        rel_err = 4.0 / math.sqrt(2 * w.numel())  # ~4 standard errors of a sample std
        assert abs(w.std().item() / expected_std - 1) < rel_err, (conv, w.std().item(), expected_std)
        assert abs(w.mean().item()) < 4 * expected_std / math.sqrt(w.numel())
        assert torch.count_nonzero(conv.bias) == 0


def test_mlp_inits_and_residual_predictor():
    torch.manual_seed(0)
    net = mlp(256, [512], 64)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256, 512), (512, 64)]
    assert sum(isinstance(m, nn.ReLU) for m in net) == 1  # no activation after the output layer
    for m in linears:
        assert abs(m.weight.std().item() / math.sqrt(2.0 / m.in_features) - 1) < 0.05
        assert torch.count_nonzero(m.bias) == 0
    ortho = mlp(32, [64], 16, init="orthogonal")
    w = ortho[0].weight.detach()  # 64 x 32: orthonormal columns
    torch.testing.assert_close(w.T @ w, torch.eye(32), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unknown init"):
        mlp(4, [4], 4, init="xavier")
    res = ResidualMLP(8, hidden=16)
    x = torch.randn(5, 8)
    torch.testing.assert_close(res(x), x + res.net(x))


def test_check_input_and_bad_shapes_raise_clear_errors():
    enc = ConvEncoder("dmc", (9, 84, 84))
    check_input(enc, (9, 84, 84))
    with pytest.raises(ValueError, match=r"expects observations of shape \(9, 84, 84\).*\(3, 84, 84\)"):
        check_input(enc, (3, 84, 84))
    with pytest.raises(ValueError, match="unknown encoder"):
        ConvEncoder("resnet", (3, 84, 84))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="too small"):
        ConvEncoder("atari", (4, 20, 20))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ConvEncoder("dmc", (84, 84))  # type: ignore[arg-type]


# --- random shift -------------------------------------------------------------------------------

H = W = 12
PAD = 4


def _unique_images(batch: int, channels: int, dtype=torch.uint8) -> torch.Tensor:
    """Images whose every pixel value is unique within a channel (channel c offset by 7c), so a
    crop's content reveals its offset."""
    base = torch.arange(H * W).reshape(H, W)
    x = torch.stack([(base + 7 * c) % 256 for c in range(channels)])  # 144 + 7c < 256 for c <= 15
    return x.expand(batch, channels, H, W).to(dtype).clone()


def _explicit_crops(img: np.ndarray, pad: int) -> dict[tuple[int, int], np.ndarray]:
    """Every crop of the edge-padded image, keyed by its offset (dy, dx) in [-pad, pad]^2."""
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    h, w = img.shape[1:]
    return {
        (dy, dx): padded[:, pad + dy: pad + dy + h, pad + dx: pad + dx + w]
        for dy in range(-pad, pad + 1)
        for dx in range(-pad, pad + 1)
    }


def _decode_offsets(out: torch.Tensor, img: torch.Tensor, pad: int) -> list[tuple[int, int]]:
    """For each sample, the offset of the one explicit edge-padded crop equal to it (asserts one exists),
    checked channel by channel so that every channel must have moved by the same offset."""
    offsets = []
    for b in range(len(out)):
        per_channel = []
        for c in range(out.shape[1]):
            crops = _explicit_crops(img[b, c: c + 1].numpy(), pad)
            matches = [k for k, crop in crops.items() if np.array_equal(crop, out[b, c: c + 1].numpy())]
            assert len(matches) == 1, f"sample {b} channel {c} is not an edge-padded crop within ±{pad}"
            per_channel.append(matches[0])
        assert len(set(per_channel)) == 1, f"sample {b}: channels shifted differently {per_channel}"
        offsets.append(per_channel[0])
    return offsets


def test_random_shift_is_an_edge_padded_crop_shared_by_all_channels():
    torch.manual_seed(0)
    x = _unique_images(64, 3)
    out = random_shift(x, pad=PAD)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    offsets = _decode_offsets(out, x, PAD)
    # Offsets cover the whole range and differ between samples (independent per sample).
    assert len(set(offsets)) > 20
    assert len({dy for dy, _ in offsets}) >= 7 and len({dx for _, dx in offsets}) >= 7


def test_random_shift_prob_zero_is_identity_and_prob_fraction_is_respected():
    x = _unique_images(16, 2)
    torch.testing.assert_close(random_shift(x, pad=PAD, prob=0.0), x)
    torch.manual_seed(1)
    n, prob = 4000, 0.3
    x = _unique_images(n, 1)
    out = random_shift(x, pad=PAD, prob=prob)
    moved = (out != x).flatten(1).any(dim=1).float().mean().item()
    # A sample drawn to shift still lands on offset (0, 0) with probability 1/81.
    expected = prob * (1 - 1 / (2 * PAD + 1) ** 2)
    assert abs(moved - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.int16])
def test_random_shift_preserves_dtype_and_matches_crops(dtype):
    torch.manual_seed(2)
    x = _unique_images(8, 2, dtype)
    out = random_shift(x, pad=2)
    assert out.dtype == dtype
    _decode_offsets(out.to(torch.int64), x.to(torch.int64), 2)


def _count_torch_calls(fn) -> int:
    class Counter(TorchFunctionMode):
        n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Counter.n += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fn()
    return Counter.n


def test_augmentations_are_vectorised_over_the_batch():
    # A python loop over samples would issue more torch calls for a bigger batch.
    small, big = _unique_images(2, 3), _unique_images(64, 3)
    assert _count_torch_calls(lambda: random_shift(small, prob=0.5)) == _count_torch_calls(
        lambda: random_shift(big, prob=0.5)
    )
    z_small, z_big = torch.rand(2, 4, 5, 5), torch.rand(64, 4, 5, 5)
    assert _count_torch_calls(lambda: subpixel_shift(z_small)) == _count_torch_calls(lambda: subpixel_shift(z_big))


# --- sub-pixel shift ----------------------------------------------------------------------------


def test_shift_bilinear_zero_is_identity_and_unit_shifts_are_edge_clamped_rolls():
    torch.manual_seed(3)
    z = torch.rand(4, 3, 6, 7)
    torch.testing.assert_close(shift_bilinear(z, torch.zeros(4, 2)), z, atol=1e-5, rtol=0)
    idx_h, idx_w = torch.arange(6), torch.arange(7)
    for dx, dy in [(1, 0), (-1, 0), (0, 1), (0, -1), (1, -1)]:
        shift = torch.tensor([[dx, dy]], dtype=torch.float32).expand(4, 2)
        rows = (idx_h + dy).clamp(0, 5)
        cols = (idx_w + dx).clamp(0, 6)
        expected = z[:, :, rows][:, :, :, cols]
        torch.testing.assert_close(shift_bilinear(z, shift), expected, atol=1e-5, rtol=0)


def test_shift_bilinear_stays_in_the_2x2_neighbourhood_hull():
    torch.manual_seed(4)
    B, C, h, w = 32, 2, 5, 6
    z = torch.rand(B, C, h, w)
    shift = torch.rand(B, 2) * 2 - 1
    out = shift_bilinear(z, shift)
    # Output (i, j) samples the edge-clamped input at (i + dy, j + dx): its 2x2 cell is
    # rows floor(i+dy), floor(i+dy)+1 and columns floor(j+dx), floor(j+dx)+1.
    y0 = (torch.arange(h)[None, :] + shift[:, 1:2]).floor().long()
    x0 = (torch.arange(w)[None, :] + shift[:, 0:1]).floor().long()
    corners = []
    for oy in (0, 1):
        for ox in (0, 1):
            r = (y0 + oy).clamp(0, h - 1)[:, None, :, None].expand(B, C, h, w)
            c = (x0 + ox).clamp(0, w - 1)[:, None, None, :].expand(B, C, h, w)
            corners.append(torch.gather(torch.gather(z, 2, r), 3, c))
    stacked = torch.stack(corners)
    assert (out >= stacked.min(0).values - 1e-6).all() and (out <= stacked.max(0).values + 1e-6).all()
    # Not trivially satisfied: a genuine fractional shift changes the image.
    assert (out - z).abs().max() > 0.05


def test_subpixel_shift_draws_one_uniform_shift_per_sample_in_unit_range():
    torch.manual_seed(5)
    B, h, w = 512, 7, 7
    ramp_x = torch.arange(w, dtype=torch.float32).expand(h, w)
    ramp_y = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    z = torch.stack([ramp_x, ramp_y]).expand(B, 2, h, w).contiguous()
    out = subpixel_shift(z, max_shift=1.0)
    assert out.dtype == z.dtype and out.shape == z.shape
    # Away from the border a bilinear shift of a linear ramp adds the shift itself, so channel 0
    # reveals dx and channel 1 dy; every interior pixel must agree (one shift per sample).
    d = (out - z)[:, :, 1:-1, 1:-1]
    shifts = d[:, :, 0, 0]
    torch.testing.assert_close(d, shifts[:, :, None, None].expand_as(d), atol=1e-4, rtol=0)
    assert shifts.abs().max() <= 1.0 + 1e-5
    # Uniform on [-1, 1] independently per axis and sample: mean 0, std 1/sqrt(3), uncorrelated.
    assert shifts.mean(0).abs().max() < 4 * 0.577 / math.sqrt(B)
    assert ((shifts.std(0) - 1 / math.sqrt(3)).abs() < 0.05).all()
    assert abs(torch.corrcoef(shifts.T)[0, 1].item()) < 4 / math.sqrt(B)
