"""The algorithm registry: a third agent, written here in full, trains, checkpoints, resumes, evaluates, collects
and exports through the same commands as SAC and PPO with one registry line; nothing outside the registry
branches on which agent a run uses."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

import atcrl
from atcrl.checkpoint import list_checkpoints, load_checkpoint
from atcrl.cli import main as atcrl_cli
from atcrl.device import resolve_device
from atcrl.encoder_io import load_encoder
from atcrl.fastpath import FastPathConfig
from atcrl.nets.encoders import ConvEncoder
from atcrl.presets import RLPreset
from atcrl.resumable import RESUMABLE
from atcrl.train.algorithms import ALGORITHMS, PPO, SAC
from atcrl.train.rl_checkpoint import read_run_info

# --------------------------------------------------------------------------- the toy agent's own module


@dataclass(frozen=True)
class ToyConfig:
    """A linear policy on a conv, trained to act small: just enough of an agent to drive every command."""

    env: str = "tiny:point"
    steps: int = 60
    seed: int = 0
    device: str = field(default="cpu", metadata=RESUMABLE)
    encoder_path: str = ""
    encoder: str = "dmc"
    mode: str = "end_to_end"
    image_size: int = 32
    frame_stack: int = 1
    lr: float = 1e-2
    fast: FastPathConfig = field(default_factory=FastPathConfig.fp32_eager, metadata=RESUMABLE)


class ToyAgent(nn.Module):
    def __init__(self, encoder: ConvEncoder, action_dim: int, lr: float, device: torch.device | str = "cpu"):
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(encoder.feature_dim, action_dim)
        self.to(device)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=lr)
        self.updates = 0

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.encoder(obs).flatten(1)))

    def update(self, obs: torch.Tensor) -> float:
        loss = self(obs).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return loss.item()

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {"modules": super().state_dict(*args, **kwargs), "optimizer": self.optimizer.state_dict(),
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        result = super().load_state_dict(state["modules"], strict=strict, assign=assign)
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
        return result


@dataclass
class ToyRun:
    cfg: ToyConfig
    env: Any
    agent: ToyAgent
    step: int = 0
    obs: Any = None
    process: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {"agent": self.agent.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        self.step, self.obs = int(state["step"]), None


class Toy:
    name = "toy"
    discrete = False
    config_cls = ToyConfig
    agent_cls = ToyAgent
    presets: ClassVar[dict[str, RLPreset]] = {"toy-point": RLPreset("toy", "tiny:point", "the toy agent of the registry test",
                                                                 lambda env: ToyConfig(env=env))}
    loop_evaluates = False
    encoder_key = "encoder."
    updates_key = "updates"
    changeable: tuple[str, ...] = ()
    lr_fields: tuple[str, ...] = ()
    overrides = None

    def total_steps(self, loop: ToyConfig) -> int:
        return loop.steps

    def warmup_steps(self, loop: ToyConfig) -> int:
        return 0

    def build_run(self, loop: ToyConfig, *, encoder: ConvEncoder | None = None) -> ToyRun:
        from atcrl.envs import make_env

        torch.manual_seed(loop.seed)
        env = make_env(loop.env, seed=loop.seed, image_size=loop.image_size, frame_stack=loop.frame_stack)
        obs_shape = tuple(env.observation_space.shape)
        encoder = encoder or ConvEncoder(loop.encoder, obs_shape)  # type: ignore[arg-type]
        agent = self.build_agent(loop, encoder, int(np.prod(env.action_space.shape)), resolve_device(loop.device))
        return ToyRun(loop, env, agent)

    def after_restore(self, run: ToyRun) -> None:
        pass

    def check_finite(self, run: ToyRun) -> None:
        pass

    def train(self, run: ToyRun, hooks: Any) -> None:
        while run.step < run.cfg.steps:
            if run.obs is None:
                run.obs, _ = run.env.reset()
            x = torch.from_numpy(np.ascontiguousarray(run.obs))[None]
            loss = run.agent.update(x)
            with torch.no_grad():
                action = run.agent(x)[0].numpy()
            run.obs, _, terminated, truncated, _ = run.env.step(action)
            if terminated or truncated:
                run.obs = None
            run.step += 1
            if run.step % 10 == 0:
                hooks.on_metrics(run.step, {"rl/loss": loss, "rl/updates": float(run.agent.updates)})
            hooks.evaluate(run.step, run.step >= run.cfg.steps)
            hooks.video(run.step)
            hooks.safe_point(run.step)

    def replays(self, run: ToyRun) -> list:
        return []

    def envs(self, run: ToyRun) -> dict[str, Any]:
        return {"train": run.env}

    def close(self, run: ToyRun) -> None:
        run.env.close()

    def shapes(self, run: ToyRun) -> tuple[ConvEncoder, tuple[int, ...], int]:
        return run.agent.encoder, tuple(run.env.observation_space.shape), run.agent.head.out_features

    def build_agent(self, loop: ToyConfig, encoder: ConvEncoder, action_dim: int, device: Any) -> ToyAgent:
        return ToyAgent(encoder, action_dim, loop.lr, device)

    def actor(self, agent: ToyAgent, *, explore: bool, generator: torch.Generator | None):
        def act(obs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return agent(torch.from_numpy(np.ascontiguousarray(obs))[None])[0].numpy()
        return act

    def conv_trained_by_ul(self, loop: dict[str, Any]) -> bool:
        return False


# --------------------------------------------------------------------------- the test


def test_a_third_agent_needs_only_its_own_module_and_one_registry_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ALGORITHMS, "toy", Toy())  # the one registry line

    run = tmp_path / "toy"
    assert atcrl_cli(["train", "--preset", "toy-point", "--steps", "60", "--ckpt-every", "20", "--stop-after", "40",
                      "--eval-every", "30", "--eval-episodes", "2", "--no-tensorboard", "--out", str(run)]) == 0
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [20, 40]
    assert read_run_info(run).algo == "toy"
    assert atcrl_cli(["train", "--resume", str(run)]) == 0
    ckpt = load_checkpoint(run / "checkpoints", kind="train")
    assert ckpt.state["step"] == 60 and ckpt.state["run"]["agent"]["updates"] == 60 and "envs" in ckpt.state
    summary = json.loads((run / "summary.json").read_text())
    assert [s for s, _ in summary["eval_curve"]] == [1, 30, 60]  # the session's: first step, multiples, end
    capsys.readouterr()

    assert atcrl_cli(["evaluate", "--run", str(run), "--episodes", "2"]) == 0
    assert "step 60" in capsys.readouterr().out
    assert atcrl_cli(["collect", "--checkpoint", str(run), "--episodes", "1", "--out", str(tmp_path / "data")]) == 0
    assert atcrl_cli(["export", "--run", str(run), "--out", str(tmp_path / "enc.safetensors")]) == 0
    exported = load_encoder(tmp_path / "enc.safetensors").state_dict()
    weights = ckpt.state["run"]["agent"]["modules"]
    assert all(torch.equal(weights["encoder." + k], v) for k, v in exported.items())
    assert json.loads((tmp_path / "enc.json").read_text())["objective"] == "toy end_to_end"


def test_both_agents_keep_their_weights_under_modules_with_the_conv_at_their_encoder_key(tmp_path):
    for algo in (SAC(), PPO()):
        loop = next(iter(algo.presets.values())).config("tiny:catch" if algo.discrete else "tiny:point")
        encoder = ConvEncoder("dmc", (3, 32, 32))
        agent = algo.build_agent(loop, encoder, 3, "cpu")
        state = agent.state_dict()
        assert isinstance(agent, nn.Module) and algo.updates_key in state
        conv = {k[len(algo.encoder_key):]: v for k, v in state["modules"].items() if k.startswith(algo.encoder_key)}
        assert conv.keys() == encoder.state_dict().keys()


def test_no_module_outside_the_registry_branches_on_the_agent():
    root = Path(atcrl.__file__).parent
    pattern = re.compile(r"algo\s*==|\.algo\s*[!=]=|hasattr\(run,|isinstance\([^)]*(SACAgent|PPOAgent)")
    found = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if p.name != "algorithms.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_registered_agent_names_itself_and_its_presets(name):
    algo = ALGORITHMS[name]
    assert algo.name == name and algo.presets and all(p.algo == name for p in algo.presets.values())
    for preset in algo.presets.values():  # a preset is a complete, typed loop config for its env
        config = preset.config(preset.env)
        assert isinstance(config, algo.config_cls) and config.env == preset.env
    assert set(algo.lr_fields) <= set(algo.changeable)
