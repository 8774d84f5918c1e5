"""Momentum targets: exact EMA arithmetic, integer buffers copied, copies detached from their source."""

from __future__ import annotations

import torch
from torch import nn

from atcrl.nets.target import frozen_copy, momentum_update
from atcrl.ul import base


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_frozen_copy_is_equal_gradient_free_and_independent():
    torch.manual_seed(0)
    online = _net()
    target = frozen_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    for t, o in zip(target.state_dict().values(), online.state_dict().values()):
        assert torch.equal(t, o) and t.data_ptr() != o.data_ptr()


def test_momentum_update_is_the_ema_and_copies_integer_buffers():
    torch.manual_seed(0)
    online = _net()
    target = frozen_copy(online)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online.train()
    online(torch.randn(8, 3))  # moves BatchNorm running stats and its integer batch counter
    tau = 0.25
    momentum_update(target, online, tau)
    for k, v in target.state_dict().items():
        o = online.state_dict()[k]
        if v.is_floating_point():
            torch.testing.assert_close(v, (1 - tau) * before[k] + tau * o)
        else:
            assert torch.equal(v, o) and not torch.equal(v, before[k])


def test_old_import_path_still_works():
    assert base.frozen_copy is frozen_copy and base.momentum_update is momentum_update
