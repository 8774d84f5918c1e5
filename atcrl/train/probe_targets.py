"""What a probe regresses: the recorded physics state, with every hinge angle as its sine and cosine.

A DMC physics vector is (qpos, qvel, act). A hinge joint's angle wraps around (cartpole's pole,
reacher's shoulder turn freely), so no linear read-out can fit the raw angle: the same pose has
many values. Its (sin, cos) pair is a continuous function of the pose, so the probe scores those.
Slide joints, velocities and actuator states stay raw. The joint layout comes from the task's own
dm_control model; envs without one (tiny:*) keep their raw, unnamed dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

FREE, BALL, SLIDE, HINGE = 0, 1, 2, 3
"""MuJoCo's joint types (mjtJoint)."""
QPOS_SIZE = {FREE: 7, BALL: 4, SLIDE: 1, HINGE: 1}
DOF_SIZE = {FREE: 6, BALL: 3, SLIDE: 1, HINGE: 1}


class Joint(NamedTuple):
    name: str
    type: int
    """One of FREE, BALL, SLIDE, HINGE."""
    qpos: int
    """Index of its first position coordinate in qpos."""
    dof: int
    """Index of its first velocity coordinate in qvel."""


@dataclass(frozen=True)
class Targets:
    """The probe's target columns, each one physics column raw or the sine/cosine of a hinge angle."""

    names: tuple[str, ...]
    """One per target, e.g. "slider", "hinge_1.sin", "hinge_1.cos", "slider.vel"."""
    source: tuple[int, ...]
    """The physics column each target reads."""
    transform: tuple[str, ...]
    """"raw", "sin" or "cos" per target."""

    def apply(self, physics: np.ndarray) -> np.ndarray:
        """[N, S] physics rows -> [N, len(names)] targets."""
        if physics.shape[1] <= max(self.source):
            raise ValueError(f"physics rows have {physics.shape[1]} columns; the targets read column {max(self.source)}")
        cols = physics[:, list(self.source)]
        return np.stack([np.sin(c) if t == "sin" else np.cos(c) if t == "cos" else c
                         for c, t in zip(cols.T, self.transform)], axis=1)


def raw_targets(physics_dim: int) -> Targets:
    """Every physics column as it is: physics[0], physics[1], ..."""
    return Targets(tuple(f"physics[{i}]" for i in range(physics_dim)), tuple(range(physics_dim)),
                   ("raw",) * physics_dim)


def joint_targets(joints: Sequence[Joint], nq: int, nv: int, na: int, physics_dim: int) -> Targets:
    """Targets of a (qpos, qvel, act[, extra]) physics vector: hinge angles as (sin, cos), the rest raw."""
    if physics_dim < nq + nv + na:
        raise ValueError(f"physics has {physics_dim} dims, fewer than the model's qpos + qvel + act "
                         f"({nq} + {nv} + {na}); was it recorded from another task?")
    if sum(QPOS_SIZE[j.type] for j in joints) != nq or sum(DOF_SIZE[j.type] for j in joints) != nv:
        raise ValueError(f"the joints' position and velocity sizes do not add up to the model's nq {nq}, nv {nv}")
    names: list[str] = []
    source: list[int] = []
    transform: list[str] = []

    def add(name: str, col: int, how: str = "raw") -> None:
        names.append(name)
        source.append(col)
        transform.append(how)

    for j in joints:
        if j.type == HINGE:
            add(f"{j.name}.sin", j.qpos, "sin")
            add(f"{j.name}.cos", j.qpos, "cos")
        elif j.type == SLIDE:
            add(j.name, j.qpos)
        else:  # free / ball: positions and quaternion coordinates, raw
            for k in range(QPOS_SIZE[j.type]):
                add(f"{j.name}.qpos{k}", j.qpos + k)
    for j in joints:
        size = DOF_SIZE[j.type]
        for k in range(size):
            add(f"{j.name}.vel" + (str(k) if size > 1 else ""), nq + j.dof + k)
    for i in range(na):
        add(f"act[{i}]", nq + nv + i)
    for i in range(nq + nv + na, physics_dim):
        add(f"physics[{i}]", i)
    return Targets(tuple(names), tuple(source), tuple(transform))


def dmc_joints(spec: str) -> tuple[list[Joint], int, int, int]:
    """(joints, nq, nv, na) of a "dmc:<domain>-<task>" task's model (loaded without rendering)."""
    from atcrl.envs.errors import require
    from atcrl.envs.gl import configure_headless_gl

    configure_headless_gl()  # MuJoCo reads MUJOCO_GL at import time
    suite = require("dm_control.suite", "dmc", "dmc")
    domain, task = spec.removeprefix("dmc:").split("-")
    env = suite.load(domain, task)
    try:
        m = env.physics.model
        joints = [Joint(env.physics.model.id2name(j, "joint") or f"joint{j}", int(m.jnt_type[j]),
                        int(m.jnt_qposadr[j]), int(m.jnt_dofadr[j])) for j in range(m.njnt)]
        return joints, int(m.nq), int(m.nv), int(m.na)
    finally:
        env.physics.free()


def targets_of(task: str | None, physics_dim: int) -> Targets:
    """The probe targets of a task's physics: named, with (sin, cos) hinges for dmc:* tasks; raw otherwise."""
    if task is None or not task.startswith("dmc:"):
        return raw_targets(physics_dim)
    return joint_targets(*dmc_joints(task), physics_dim)
