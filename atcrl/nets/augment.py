"""Image augmentations as pure, batched tensor functions that run where the batch lives."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(
    x: torch.Tensor, pad: int = 4, prob: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random shift: pad by ``pad`` pixels in edge mode and crop back at a random offset.

    x: [B, C, H, W] of any dtype (uint8 stays uint8). One shift per sample, shared by all of
    its channels, so stacked frames move together. A sample is shifted with probability
    ``prob``; otherwise it gets the centre crop, i.e. is returned unchanged.
    Cropping an edge-padded image equals reading the original at clamped coordinates,
    which needs no padded copy and works for integer dtypes.
    """
    if pad == 0 or prob <= 0:
        return x
    B = x.shape[0]
    shifts = torch.randint(0, 2 * pad + 1, (2, B), device=x.device, generator=generator) - pad
    if prob >= 1:
        return _shift(x, shifts)
    keep = torch.rand(B, device=x.device, generator=generator) < prob
    if x.device.type == "cuda":
        # Picking the moved samples out would read their count back (a device sync, and no CUDA graph):
        # on the GPU every sample is shifted and the kept ones selected, the same values.
        return torch.where(keep.view(B, *([1] * (x.ndim - 1))), _shift(x, shifts), x)
    # Only the samples drawn to move are gathered; the rest (the centre crop) are copied through.
    moved = keep.nonzero().squeeze(1)
    out = x.clone(memory_format=torch.contiguous_format)
    if len(moved):
        out[moved] = _shift(x[moved], shifts[:, moved])
    return out


def _shift(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Sample b read at clamped coordinates (row + shifts[0, b], col + shifts[1, b])."""
    B, C, H, W = x.shape
    dev = x.device
    rows = (torch.arange(H, device=dev)[None, :] + shifts[0][:, None]).clamp_(0, H - 1)
    cols = (torch.arange(W, device=dev)[None, :] + shifts[1][:, None]).clamp_(0, W - 1)
    # One gather over flattened pixels (shared by all channels) is cheaper than a row and a column pass.
    flat = (rows[:, :, None] * W + cols[:, None, :]).view(B, 1, H * W).expand(B, C, H * W)
    return torch.gather(x.reshape(B, C, H * W), 2, flat).view(B, C, H, W)


def subpixel_shift(
    z: torch.Tensor, max_shift: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sub-pixel random shift for latent images: edge-pad by 1, shift by (dx, dy) ~ U[-1, 1]^2.

    z: [B, C, H, W] float. Each output pixel is the bilinear average of its 2x2 neighbourhood
    at the shifted position; sampling with border clamping is exactly an edge pad of 1
    followed by the shift, since shifts never reach further than one pixel.
    """
    B = z.shape[0]
    shift = (torch.rand(B, 2, device=z.device, generator=generator) * 2 - 1) * max_shift
    return shift_bilinear(z, shift)


def shift_bilinear(z: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Translate each sample by ``shift[b] = (dx, dy)`` pixels, bilinear, edge-clamped:
    ``out[b, :, i, j] = z[b, :, i + dy, j + dx]``, reading between pixels bilinearly."""
    B, _, H, W = z.shape
    zf = z.float()
    ys = torch.arange(H, device=z.device, dtype=torch.float32)[None, :] + shift[:, 1:2]
    xs = torch.arange(W, device=z.device, dtype=torch.float32)[None, :] + shift[:, 0:1]
    # grid_sample works in [-1, 1] coordinates; align_corners=True maps -1/1 to pixel centres 0 and W-1.
    gy = (2 * ys / max(H - 1, 1) - 1)[:, :, None].expand(B, H, W)
    gx = (2 * xs / max(W - 1, 1) - 1)[:, None, :].expand(B, H, W)
    grid = torch.stack((gx, gy), dim=-1)
    out = F.grid_sample(zf, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(z.dtype)
