"""How objectives turn batch fields into network inputs: pixels to [0, 1], actions to vectors or labels.

Entries at masked (invalid) steps are replaced before use, so whatever a sampler leaves there
(zeros, a repeated frame, garbage) can never reach a loss or raise an indexing error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_unit(obs: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1]; float input is taken as already scaled (like the encoders)."""
    return obs.float().div_(255.0) if obs.dtype == torch.uint8 else obs.float()


def require_action_dim(action_dim: int | None, who: str) -> int:
    """The action size an objective was given, or a clear error that it needs one."""
    if action_dim is None or int(action_dim) < 1:
        raise ValueError(
            f"{who} needs the action space: pass action_dim=<number of discrete actions, or the size "
            f"of a continuous action vector> (and discrete_actions=True for discrete), got {action_dim!r}"
        )
    return int(action_dim)


def action_indices(actions: torch.Tensor, action_dim: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Discrete actions as int64 class labels, with masked entries set to 0.

    actions: integer tensor of any shape; mask: bool of the same shape (None = all valid).
    Raises a ValueError naming the offending value when a valid action is outside [0, action_dim).
    """
    if actions.is_floating_point() or actions.is_complex():
        raise ValueError(
            f"discrete actions must be integers, got dtype {actions.dtype} "
            "(for a continuous action space pass discrete_actions=False)"
        )
    a = actions.long()
    if mask is not None:
        if mask.shape != a.shape:
            raise ValueError(f"action mask {tuple(mask.shape)} must match discrete actions {tuple(a.shape)}")
        a = torch.where(mask, a, torch.zeros_like(a))
    bad = (a < 0) | (a >= action_dim)
    if bool(bad.any()):
        raise ValueError(
            f"discrete action {int(a[bad][0])} is outside [0, {action_dim}): "
            "is action_dim the size of the action space?"
        )
    return a


def action_features(
    actions: torch.Tensor, lead_ndim: int, action_dim: int, discrete: bool, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Actions as float vectors [*lead, action_dim]: one-hot when discrete, flattened when continuous.

    actions: [*lead] integers (discrete) or [*lead, *action_shape] floats (continuous), where
    ``lead`` is its first ``lead_ndim`` dimensions; mask: bool [*lead]; masked rows become zeros.
    """
    lead = actions.shape[:lead_ndim]
    if mask is not None and mask.shape != lead:
        raise ValueError(
            f"action mask {tuple(mask.shape)} must match the actions' leading dims {tuple(lead)}"
        )
    if discrete:
        if actions.ndim != lead_ndim:
            raise ValueError(
                f"discrete actions must have shape {tuple(lead)} (one index per step), "
                f"got {tuple(actions.shape)}"
            )
        x = F.one_hot(action_indices(actions, action_dim, mask), action_dim).float()
    else:
        x = actions.reshape(*lead, -1).float()
        if x.shape[-1] != action_dim:
            raise ValueError(
                f"continuous actions have {x.shape[-1]} values per step but action_dim={action_dim}"
            )
    if mask is not None:
        x = torch.where(mask[..., None], x, torch.zeros((), device=x.device))
    return x
