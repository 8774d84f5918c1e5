"""Compute benchmarks: the matmul roofline, analytic FLOP counts, and encoder training throughput."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from atcrl import fastpath
from atcrl.bench.timing import measure
from atcrl.fastpath import FastPathConfig
from atcrl.nets.encoders import ConvEncoder
from atcrl.process import configure_process

ENCODER_INPUTS: dict[str, tuple[int, int, int]] = {"dmc": (9, 84, 84), "atari": (4, 84, 84)}
"""Stacked observation per encoder: 3 RGB frames for DMC, 4 grey frames for Atari."""
HEAD_DIM = 128
"""Width of the linear head trained with the encoder (ATC's DMC code size), so Adam sees a realistic model."""


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: a name, its fast-path config, and whether it is the shipped default."""

    name: str
    fast: FastPathConfig
    default: bool = False


def ablation(threads: int, with_compile: bool = True) -> list[Variant]:
    """fp32 eager, then one switch added per row, in the order the docs discuss them.

    bf16 is forced on in its own row so its effect is measured even where auto leaves it off; the
    rows after it go back to the default (auto) precision.
    """
    eager = FastPathConfig.fp32_eager(threads=threads)
    cl = dataclasses.replace(eager, channels_last=True)
    alloc = dataclasses.replace(cl, bf16=None, tune_allocator=True)
    fused = dataclasses.replace(alloc, fused_optim=True)
    rows = [Variant("fp32 eager", eager), Variant("+ channels_last", cl),
            Variant("+ bf16 (forced)", dataclasses.replace(cl, bf16=True)),
            Variant("+ allocator (bf16 auto)", alloc),
            Variant("+ fused Adam", fused, default=fused == FastPathConfig(threads=threads))]
    if with_compile:
        rows.append(Variant("+ compile", dataclasses.replace(fused, compile=True)))
    return rows


# --------------------------------------------------------------------------- roofline


MATMUL_MAX_CALL_S = 1.0
"""The roofline's matrices grow from 256² by doubling, up to the n asked for, while the next product would take
at most this long (8x the last): a dtype the hardware only emulates (bf16 on AVX2) took 110 s per 2048² product."""


def matmul_gflops(dtype: str, n: int = 2048, reps: int = 10, device: str = "cpu") -> dict[str, float]:
    """Square matmul rate in GFLOP/s (2 n^3 per product) for "fp32" or "bf16", at most n x n (MATMUL_MAX_CALL_S)."""
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    g = torch.Generator(device).manual_seed(0)
    size = min(n, 256)
    while True:
        a, b = (torch.randn(size, size, generator=g, device=device).to(torch_dtype) for _ in range(2))
        out = torch.empty(size, size, dtype=torch_dtype, device=device)
        start = time.perf_counter()
        _synced(torch.mm, a, b, out=out)
        if 2 * size > n or 8 * (time.perf_counter() - start) > MATMUL_MAX_CALL_S:
            break
        size *= 2
    n = size
    t = measure(lambda: _synced(torch.mm, a, b, out=out), items=2 * n**3 / 1e9, warmup=2, reps=reps)
    return {"gflops": t["per_s"], "gflops_median": t["per_s_median"], "n": n, "load_average": t["load_average"]}


def _synced(fn, *args, **kwargs):
    result = fn(*args, **kwargs)
    if torch.cuda.is_available() and isinstance(result, torch.Tensor) and result.is_cuda:
        torch.cuda.synchronize(result.device)
    return result


# --------------------------------------------------------------------------- FLOP counting


def training_flops(model: nn.Module, forward: Callable[[], Any]) -> float:
    """FLOPs of one forward + backward of ``model`` (run by ``forward()``), counted from Conv2d and Linear shapes.

    Forward: 2 x multiply-adds. Backward: the same again for each weight gradient, and again for each
    input gradient that is needed (not for a layer reading the data itself). Biases, activations and
    the optimizer are left out: they are memory-bound and would not count against a matmul roofline.
    """
    total = 0.0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs = output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            macs = output.numel() * module.in_features
        passes = 1 + int(module.weight.requires_grad) + int(inputs[0].requires_grad)
        total += 2.0 * macs * passes

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.enable_grad():
            forward()
    finally:
        for h in handles:
            h.remove()
    return total


# --------------------------------------------------------------------------- encoder training


class EncoderWithHead(nn.Module):
    """A conv encoder plus one linear layer: the smallest model that trains the encoder like the objectives do."""

    def __init__(self, arch: str):
        super().__init__()
        self.encoder = ConvEncoder(arch, ENCODER_INPUTS[arch])  # type: ignore[arg-type]
        self.head = nn.Linear(self.encoder.feature_dim, HEAD_DIM)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(obs).flatten(1))


def encoder_flops_per_image(arch: str) -> float:
    """Training FLOPs per image of ``EncoderWithHead(arch)`` (forward + backward)."""
    model = EncoderWithHead(arch)
    return training_flops(model, lambda: model(torch.zeros(1, *ENCODER_INPUTS[arch], dtype=torch.uint8)))


def encoder_training(arch: str, batch_sizes: list[int], fast: dict[str, Any], device: str = "cpu",
                     reps: int = 5, warmup: int = 2, min_seconds: float = 0.0) -> dict[str, Any]:
    """Images/s of forward + backward + Adam on random uint8 batches, per batch size, under ``fast``.

    ``fast`` holds FastPathConfig fields (JSON-able, so this runs in a fresh process for the allocator rows).
    """
    cfg = FastPathConfig(**fast)
    process = configure_process(cfg)
    torch.manual_seed(0)
    model = fastpath.prepare_module(EncoderWithHead(arch).to(device), cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    results = {}
    def step(obs: torch.Tensor) -> None:
        with fastpath.autocast(device, cfg):
            loss = model(obs).float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _synced(lambda: loss)

    for batch in batch_sizes:
        obs = torch.randint(0, 256, (batch, *ENCODER_INPUTS[arch]), dtype=torch.uint8, device=device)
        results[str(batch)] = measure(functools.partial(step, obs), items=batch, warmup=warmup, reps=reps,
                                      min_seconds=min_seconds)
    return {"results": results, "process": process, "fastpath": fastpath.describe(cfg, device)}
