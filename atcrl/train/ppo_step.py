"""PPO's minibatch update as a step whose metrics stay on the device (what the PPO loop runs per minibatch).

    inputs  = the minibatch (policy inputs, actions, old log-probs, advantages, returns)
    loss    = clipped surrogate + value + entropy terms              (PPOModule.minibatch_update, rl/ppo.py)
    step    = backward, gradient clip, Adam step
    meter  += every metric

Nothing here waits for the device, so the update's metrics are read once per PPO update (``read``), not
once per minibatch. With ``FastPathConfig.cuda_graph`` on CUDA the minibatch update runs as a captured CUDA
graph per minibatch size (``atcrl.train.captured``): each minibatch is copied into the tensors the graph
reads, the annealed ratio clip into a device scalar, and the annealed learning rate into the optimizer's
device-tensor rate (``PPOAgent.update``), all outside the graph. On the CPU each loss is still checked before
its optimizer step; under capture a NaN/inf is caught when the metrics are read, at the end of the update,
before the loop can checkpoint it.
"""

from __future__ import annotations

import torch

from atcrl.fastpath import captures
from atcrl.rl.ppo import PPOModule
from atcrl.train.captured import Captured

__all__ = ["PPOStep"]


class PPOStep:
    """A ``MinibatchStep`` for ``PPOModule.update`` (PPO and PPO-LSTM): sync-free, captured where the fast path says so.

    A restored checkpoint replaces the optimizer states a graph points at: make a new step after one
    (``PPORun.load_state_dict`` does)."""

    def __init__(self, agent: PPOModule):
        self.agent = agent
        self.device = agent.device
        self.runner = Captured(self.device, captures(agent.fast, self.device))
        self.meter = self.runner.meter
        # On the CPU every check is free, so a NaN/inf stops the update before its optimizer step.
        self.check = self.device.type == "cpu"
        self._inputs: dict[int, dict[str, torch.Tensor]] = {}  # what each minibatch size's graph reads
        self._clip = torch.zeros((), device=self.device)

    @property
    def capture(self) -> bool:
        return self.runner.capture

    def __call__(self, batch: dict[str, torch.Tensor], clip: float) -> None:
        size = len(batch["actions"])
        if not self.capture:
            self.runner(size, lambda: self.meter.add(self.agent.minibatch_update(batch, clip, check=self.check)))
            return
        inputs = self._inputs.get(size)
        if inputs is None:
            inputs = self._inputs[size] = {k: v.clone() for k, v in batch.items()}
        else:
            for k, v in batch.items():
                inputs[k].copy_(v)
        self._clip.fill_(clip)
        self.runner(size, lambda: self.meter.add(self.agent.minibatch_update(inputs, self._clip, check=False)))

    def read(self) -> dict[str, float]:
        """Means of the minibatch metrics since the last read (one sync); FloatingPointError if one is NaN/inf."""
        return self.meter.read()
