"""On-policy rollout storage for PPO and generalised advantage estimation (GAE).

Time-major [T, N] tensors for T steps of N vector envs, kept on the agent's device. Each step
records what the policy saw (uint8 observations, or the encoder's features when the RL loss
cannot reach the encoder and they can be computed once), the action, its log-probability and
value, the learning reward and how the step ended.

Vector envs reset in the same step an episode ends, so ``values[t + 1]`` then belongs to the
next episode. What follows step t is therefore stored explicitly: nothing after a true terminal,
the value of the episode's final observation after a time-limit truncation (it is a real state
the episode was cut at, so its value is the right bootstrap), and ``values[t + 1]`` otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and value targets (returns) for [T, N] rollouts.

    next_values[t]: the value of the state after step t within the same episode (ignored at a
    true terminal). A step that ends an episode, terminated or truncated, also stops the
    advantage recursion, since the next row belongs to a new episode.
    Returns (advantages, returns = advantages + values), both [T, N].
    """
    if not rewards.shape == values.shape == next_values.shape == terminated.shape == truncated.shape:
        raise ValueError(
            "rewards, values, next_values, terminated and truncated must share a [T, N] shape, got "
            f"{[tuple(x.shape) for x in (rewards, values, next_values, terminated, truncated)]}"
        )
    bootstrap = (~terminated).to(values.dtype)
    carry = (~(terminated | truncated)).to(values.dtype)
    deltas = rewards + gamma * next_values * bootstrap - values
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[0])
    for t in range(len(rewards) - 1, -1, -1):
        running = deltas[t] + gamma * lam * carry[t] * running
        advantages[t] = running
    return advantages, advantages + values


@dataclass
class Rollout:
    """One PPO iteration's worth of experience, [T, N, ...] on one device."""

    inputs: torch.Tensor
    """[T, N, ...] what the policy head's input is computed from: uint8 observations, or features."""
    actions: torch.Tensor
    """[T, N] int64 actions taken."""
    logp: torch.Tensor
    """[T, N] log-probability of each action under the acting policy."""
    values: torch.Tensor
    """[T, N] value estimates of the observations acted on."""
    rewards: torch.Tensor
    """[T, N] learning rewards (sign-clipped for Atari)."""
    terminated: torch.Tensor
    """[T, N] bool: the step reached a true terminal (no value after it)."""
    truncated: torch.Tensor
    """[T, N] bool: a time limit cut the episode after this step."""
    final_values: torch.Tensor
    """[T, N] value of the episode's final observation where ``truncated`` (0 elsewhere)."""
    last_values: torch.Tensor
    """[N] value of the observations after the last step (bootstrap for unfinished episodes)."""

    @classmethod
    def empty(
        cls, horizon: int, num_envs: int, input_shape: tuple[int, ...], input_dtype: torch.dtype,
        device: torch.device | str,
    ) -> Rollout:
        def z(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        T, N = horizon, num_envs
        return cls(
            inputs=z(T, N, *input_shape, dtype=input_dtype), actions=z(T, N, dtype=torch.int64),
            logp=z(T, N), values=z(T, N), rewards=z(T, N), terminated=z(T, N, dtype=torch.bool),
            truncated=z(T, N, dtype=torch.bool), final_values=z(T, N), last_values=z(N),
        )

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def num_envs(self) -> int:
        return int(self.actions.shape[1])

    def next_values(self) -> torch.Tensor:
        """[T, N] value of the state after each step in the same episode (see the module doc)."""
        following = torch.cat([self.values[1:], self.last_values[None]], dim=0)
        return torch.where(self.truncated & ~self.terminated, self.final_values, following)

    def advantages(self, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(advantages, returns), both [T, N]."""
        return compute_gae(
            self.rewards, self.values, self.next_values(), self.terminated, self.truncated, gamma, lam
        )

    def minibatches(
        self, advantages: torch.Tensor, returns: torch.Tensor, n_minibatches: int,
        generator: torch.Generator | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch: all T * N samples, shuffled, in ``n_minibatches`` near-equal flat minibatches."""
        n = self.horizon * self.num_envs
        if not 1 <= n_minibatches <= n:
            raise ValueError(f"n_minibatches must be in [1, {n}] for {n} samples, got {n_minibatches}")
        flat = {
            "inputs": self.inputs.flatten(0, 1), "actions": self.actions.flatten(),
            "logp": self.logp.flatten(), "values": self.values.flatten(),
            "advantages": advantages.flatten(), "returns": returns.flatten(),
        }
        # Drawn on the host (the generator's stream); a pageable copy is staged before this returns, so it need
        # not wait for the device (a blocking copy would: one sync per epoch on a GPU).
        order = torch.randperm(n, generator=generator).to(self.actions.device, non_blocking=True)
        for idx in torch.tensor_split(order, n_minibatches):
            yield {k: v[idx] for k, v in flat.items()}
