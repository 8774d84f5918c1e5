"""Pixel environments from spec strings: "dmc:<domain>-<task>", "atari:<Game>", "gym:<id>", "tiny:<name>".

Every env returns uint8 observations [k * C, H, W] (k stacked frames, oldest first) and, for dmc and tiny
envs, the low-dimensional state of the current frame in info["physics"].
"""

from atcrl.envs.gl import configure_headless_gl

# Before anything can import dm_control or PyOpenGL: they fix their GL backend at import time.
configure_headless_gl()

from atcrl.envs.meta import EnvMeta, env_meta
from atcrl.envs.registry import FAMILIES, make_env, make_vec_env, parse_spec

__all__ = ["FAMILIES", "EnvMeta", "env_meta", "make_env", "make_vec_env", "parse_spec"]
