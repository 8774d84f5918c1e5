"""The fast path: precision, memory layout, compilation and optimizer kernels, plus the process settings, in one config.

A training loop adopts it with three calls (see docs/performance.md)::

    configure_process(cfg.fast)                  # atcrl.process: threads + allocator, once per process
    prepare_module(objective, cfg.fast)          # channels-last activations (+ torch.compile) for every conv
    with autocast(device, cfg.fast):             # bf16 where the device runs it faster than fp32
        loss, metrics = objective.loss(batch)

Optimizers come from ``adam(params, cfg, ...)`` and gradients are clipped with ``clip_gradients``, so every
agent and UL loop steps its weights the same way. The config's process-wide fields (``threads``,
``tune_allocator``) are applied by ``atcrl.process.configure_process``.

``FastPathConfig.fp32_eager()`` is the plain baseline every benchmark figure is compared with:
float32, NCHW activations, no compilation, per-parameter Adam, the C library's default allocator behaviour.
Nothing here is CPU-specific: on CUDA the same switches pick bf16 autocast and NHWC convs.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class FastPathConfig:
    """How models run: precision, activation layout, compilation, CPU threads and allocator.

    The defaults are the fast path, each switch on where it was measured to help without changing
    results (docs/performance.md); ``fp32_eager()`` is the plain baseline.
    """

    bf16: bool | None = None
    """Autocast convs and matmuls to bfloat16. None = auto: on where the device runs bf16 faster than fp32
    (CUDA GPUs with native bf16; CPUs with AMX-BF16 tiles), off elsewhere, including CPUs with AVX-512-BF16
    alone, where bf16 matmuls measured at half the fp32 rate. True forces it on any device."""
    channels_last: bool = True
    """Run every ConvEncoder on channels-last (NHWC) activations; weights stay NCHW, so checkpoints are
    unchanged. False is the plain NCHW path."""
    compile: bool = False
    """torch.compile each ConvEncoder (the first batch of each shape compiles, tens of seconds on CPU)."""
    threads: int = 0
    """Intra-op CPU threads; 0 = auto: the cores other processes leave idle (CPU time they use over half a
    second at start-up), at most torch's current count; on a busy machine threads waiting for each other ran
    far slower than one thread, on idle cores two threads ran agents 1.5-1.8x faster than one."""
    fused_optim: bool = True
    """Adam as one fused kernel per step where torch has one for the parameters' device (CPU, CUDA, ...); the
    weights it produces differ from the per-parameter implementation only at float32 rounding (at most 5e-7
    relative after 20 steps on the DMC conv, measured), and its state dict is the same, so checkpoints load
    either way. On a SAC update (DMC sizes, 1 CPU thread) the three optimizer steps took 2.7 ms instead of 15 ms."""
    cuda_graph: bool = False
    """On CUDA, capture each SAC update (replay sampling, augmentation, critic, actor, temperature, online ATC,
    target updates and optimizer steps) once as a CUDA graph and replay it, so an update costs one launch
    instead of hundreds, with no host sync. It needs the replay (pretraining: the episodes) on the device, and
    its optimizers are made capturable, with device-tensor learning rates. Off by default until measured faster
    on a GPU; ignored on the CPU, where the same sync-free step runs eagerly. Offline pretraining's update and
    PPO's minibatch update are captured the same way (docs/performance.md, "GPU")."""
    tune_allocator: bool = True
    """Keep freed memory in glibc's heap instead of returning it to the kernel, so large batches stop paying
    fresh-page faults on every update (process-wide; also disabled by ATCRL_NO_MALLOC_TUNING=1)."""

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = auto), got {self.threads}")

    @classmethod
    def fp32_eager(cls, threads: int = 0) -> FastPathConfig:
        """The plain baseline: float32, NCHW, eager, default allocator (``threads`` as given)."""
        return cls(bf16=False, channels_last=False, compile=False, threads=threads, fused_optim=False,
                   tune_allocator=False)


# --------------------------------------------------------------------------- precision


def bf16_native(device: torch.device | str) -> bool:
    """Whether the device has bf16 arithmetic in hardware (not whether it is faster than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return _cpu_flag("_is_avx512_bf16_supported") or _cpu_flag("_is_amx_tile_supported")
    return False


def bf16_faster(device: torch.device | str) -> bool:
    """Whether bf16 is expected to beat fp32 on the device: CUDA with native bf16, or a CPU with AMX tiles.

    AVX-512-BF16 alone computes one bf16 dot product per lane pair at the fp32 FMA rate, and oneDNN's
    bf16 kernels measured slower than fp32 on such a CPU, so it does not count.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bf16_native(device)
    if device.type == "cpu":
        return _cpu_flag("_is_amx_tile_supported")
    return False


def _cpu_flag(name: str) -> bool:
    # Private torch.cpu probes (torch >= 2.3); a build without them is treated as lacking the feature.
    probe = getattr(torch.cpu, name, None)
    return bool(probe()) if probe is not None else False


def use_bf16(cfg: FastPathConfig, device: torch.device | str) -> bool:
    """Whether ``autocast`` turns bf16 on for this device: cfg.bf16 if set, else ``bf16_faster``."""
    return bf16_faster(device) if cfg.bf16 is None else cfg.bf16


@contextlib.contextmanager
def autocast(device: torch.device | str, cfg: FastPathConfig) -> Iterator[None]:
    """bf16 autocast for the forward pass when ``use_bf16``; otherwise exactly the code inside (fp32).

    Wrap the loss computation only; backward and the optimizer step run outside it.
    """
    device = torch.device(device)
    if use_bf16(cfg, device):
        # Graph capture replays kernels, not Python: autocast's per-region cast cache must stay off there.
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not captures(cfg, device)):
            yield
    else:
        yield


# --------------------------------------------------------------------------- modules


def prepare_module(module: nn.Module, cfg: FastPathConfig) -> nn.Module:
    """Set the activation layout of every ConvEncoder inside ``module`` (and compile it if asked).

    Call it on the top-level module after construction (objective, agent), so momentum-target
    copies of the encoder are covered too. Returns ``module`` for chaining.
    """
    from atcrl.nets.encoders import ConvEncoder

    for m in module.modules():
        if isinstance(m, ConvEncoder):
            m.channels_last = cfg.channels_last
            if cfg.compile and not getattr(m, "_atcrl_compiled", False):
                m.compile(dynamic=False)
                m._atcrl_compiled = True
    return module


# --------------------------------------------------------------------------- optimizers


@functools.cache
def fused_adam_supported(device_type: str) -> bool:
    """Whether this torch build has a fused Adam kernel for float32 parameters on devices of this type."""
    try:
        param = nn.Parameter(torch.zeros(1, device=device_type))
    except (RuntimeError, AssertionError):  # a device type this build or machine cannot allocate on
        return False
    param.grad = torch.zeros_like(param)
    try:  # torch checks the device when it first steps, not when the optimizer is made
        torch.optim.Adam([param], fused=True).step()
    except (RuntimeError, ValueError, NotImplementedError):
        return False
    return True


def captures(cfg: FastPathConfig | None, device: torch.device | str) -> bool:
    """Whether updates on ``device`` are captured as CUDA graphs under ``cfg``."""
    return cfg is not None and cfg.cuda_graph and torch.device(device).type == "cuda"


def adam_kwargs(cfg: FastPathConfig | None, params: Iterable[torch.Tensor]) -> dict[str, Any]:
    """``{"fused": True}`` when ``cfg`` asks for fused optimizers and torch has the kernel for all of
    ``params`` (floating point, one device type); otherwise ``{}`` (torch's default implementation).
    With CUDA-graph capture (``captures``) also ``capturable=True``: step counts stay on the device."""
    if cfg is None:
        return {}
    params = list(params)
    types = {p.device.type for p in params}
    one_type = len(types) == 1 and all(p.is_floating_point() for p in params)
    kwargs: dict[str, Any] = {}
    if cfg.fused_optim and one_type and fused_adam_supported(next(iter(types))):
        kwargs["fused"] = True
    if one_type and captures(cfg, next(iter(types))):
        kwargs["capturable"] = True
    return kwargs


def adam(params: Iterable[Any], cfg: FastPathConfig | None, **kwargs: Any) -> torch.optim.Adam:
    """``torch.optim.Adam(params, **kwargs)``, fused where ``adam_kwargs`` allows (``cfg`` None: never).

    params: tensors or param-group dicts, as for Adam. Loading a state dict keeps this optimizer's own
    kernel choice (torch would otherwise take the saved one's), so a checkpoint written with either
    choice resumes with the current config's.
    """
    params = list(params)
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    kwargs = {**adam_kwargs(cfg, tensors), **kwargs}
    if kwargs.get("capturable") and not torch.is_tensor(kwargs.get("lr", 1e-3)):
        # A captured step reads the learning rate from device memory, so a schedule can still move it.
        kwargs["lr"] = torch.tensor(float(kwargs.get("lr", 1e-3)), device=tensors[0].device)
    optimizer = torch.optim.Adam(params, **kwargs)
    optimizer.register_load_state_dict_post_hook(_keep_kernel_choice(optimizer))
    return optimizer


def _keep_kernel_choice(optimizer: torch.optim.Optimizer) -> Any:
    flags = [{k: g.get(k) for k in ("fused", "foreach", "capturable")} for g in optimizer.param_groups]
    # A captured step reads its own device-tensor learning rate: a loaded rate is written into it (and a
    # tensor rate saved by a captured run is read back as a number by the others).
    rates = [g["lr"] if torch.is_tensor(g["lr"]) else None for g in optimizer.param_groups]

    def hook(opt: torch.optim.Optimizer) -> None:
        for group, own, rate in zip(opt.param_groups, flags, rates):
            group.update(own)
            loaded = float(group["lr"])
            group["lr"] = loaded if rate is None else rate.fill_(loaded)
            # Fused and capturable kernels keep the step count on the parameter's device, the others on the CPU.
            on_device = bool(own["fused"] or own["capturable"])
            for p in group["params"]:
                step = opt.state.get(p, {}).get("step")
                if isinstance(step, torch.Tensor):
                    opt.state[p]["step"] = step.to(p.device if on_device else "cpu", torch.float32)

    return hook


def clip_gradients(params: Iterable[torch.Tensor], max_norm: float, *, sync_free: bool = False) -> torch.Tensor:
    """``clip_grad_norm_(params, max_norm or inf)`` bit for bit; returns the norm before clipping.

    It skips the pass that multiplies every gradient by exactly 1.0: always without clipping, and on
    the CPU (where reading the norm costs no device sync) whenever the norm is within bounds, unless
    ``sync_free`` asks never to read the norm (a step to be captured as a CUDA graph, or checked for syncs).
    """
    params = list(params)
    norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    # The same coefficient test as clip_grad_norm_'s clamp(max_norm / (norm + 1e-6), max=1).
    read = norm.device.type == "cpu" and not sync_free
    if max_norm > 0 and (not read or bool(max_norm / (norm + 1e-6) < 1.0)):
        nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def describe(cfg: FastPathConfig, device: torch.device | str) -> dict[str, Any]:
    """What the config resolves to on ``device``, for run logs and benchmark records."""
    device = torch.device(device)
    return {
        "device": str(device), "bf16": use_bf16(cfg, device), "bf16_native": bf16_native(device),
        "bf16_faster": bf16_faster(device), "channels_last": cfg.channels_last, "compile": cfg.compile,
        "threads": torch.get_num_threads(), "tune_allocator": cfg.tune_allocator,
        "fused_optim": cfg.fused_optim and fused_adam_supported(device.type),
    }
