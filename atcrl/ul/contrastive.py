"""Masked reductions and InfoNCE, shared by the contrastive objectives.

Samples that cross an episode end are masked rather than dropped, so batches keep their shape.
Two kinds of mask exist: a *row* mask (this prediction is not scored) and a *column* mask (this
candidate is not a real sample and must not serve as a negative either).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over the entries where ``mask`` is True; 0 when none is.

    mask: bool, broadcastable to ``values`` (None = all entries). Masked entries are replaced by
    zeros rather than multiplied by zero, so an inf or NaN there can never leak into the result.
    """
    if mask is None:
        return values.mean()
    mask = mask.expand_as(values)
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    return total / mask.sum().clamp(min=1).to(values.dtype)


def info_nce(
    logits: torch.Tensor, labels: torch.Tensor, col_valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row InfoNCE loss −log softmax(logits)[label] and per-row correctness (argmax == label).

    logits: [..., N, M] scores of N predictions against M candidates; labels: [..., N] int64 column
    of each row's positive; col_valid: bool broadcastable to [..., M] (None = all candidates real).
    Reduce with ``masked_mean(per_row, row_valid)``.

    Masked columns get a large finite negative score instead of −inf: their softmax weight is
    exactly 0, yet a row whose label is masked (it will be masked itself) still has a finite loss
    and zero, not NaN, gradients. Cross-entropy is shift-invariant and already subtracts the row
    max internally, so no explicit max subtraction is needed.
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels {tuple(labels.shape)} must match the logits' rows {tuple(logits.shape[:-1])}"
        )
    if col_valid is not None:
        floor = torch.finfo(logits.dtype).min / 4
        col_valid = col_valid.unsqueeze(-2)  # [..., 1, M]: the same candidates for every row
        logits = logits.masked_fill(~col_valid, floor)
    flat = logits.reshape(-1, logits.shape[-1])
    per_row = F.cross_entropy(flat, labels.reshape(-1), reduction="none").view(labels.shape)
    correct = logits.detach().argmax(dim=-1) == labels
    return per_row, correct
