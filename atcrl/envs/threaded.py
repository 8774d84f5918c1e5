"""An env that lives on one worker thread of its own, so its steps can overlap work on the calling thread.

SAC's ``overlap_env`` steps the training env while the agent update runs. MuJoCo's physics and the
OpenGL read-back release the GIL, as do torch's kernels, so on two cores the two really run at once.

Why one persistent thread that owns the env, rather than stepping it from whichever thread is free: an
OpenGL context is current on one thread. dm_control's EGL contexts (and any context when
``DISABLE_RENDER_THREAD_OFFLOADING`` is set) run their GL calls on the calling thread, and dm_control
refuses to make a context current on a second thread while the first still holds it: an env rendered on
one thread and stepped on another fails with "this context is already current on another thread"
(OSMesa, by default, forwards GL calls to a render thread of its own instead). MuJoCo's data structures
are not meant for concurrent use either. So the env is made, reset, stepped and closed only on the
worker; ``ThreadedEnv`` is the proxy the main thread holds. Exceptions raised by the env on the worker
are raised again where the result is collected.

The main thread may still read and set plain Python/numpy state of the env through ``unwrapped``
(``atcrl.train.rl_checkpoint`` saves and restores the reset RNGs that way): such state involves
neither GL nor MuJoCo, and it is only touched between calls, when the worker is idle and every
earlier call's writes are visible (each call's result is collected through its future first).
Nothing else of the env may be used from another thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import gymnasium as gym

from atcrl.envs.meta import env_meta

__all__ = ["ThreadedEnv"]


class ThreadedEnv:
    """Proxy of an env (made by ``make_env``) created, reset, stepped and closed on its own worker thread.

    ``reset``/``step`` wait for the result; ``step_async`` returns a future so the caller can work
    meanwhile. ``close`` closes the env on the worker and then ends the thread; always call it.
    """

    def __init__(self, make: Callable[[], gym.Env]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atcrl-env")
        self._closed = False
        try:
            self.thread_id: int = self._pool.submit(threading.get_ident).result()
            """threading.get_ident() of the worker thread that owns the env."""
            self.env: gym.Env = self._pool.submit(make).result()
            """The env itself: call it only through ``submit`` (see the module docstring)."""
        except BaseException:
            self._pool.shutdown(wait=True)
            raise
        # Plain data, fixed after construction: safe to read from any thread.
        self.observation_space = self.env.observation_space
        self.action_space = self.env.action_space
        self.atcrl_meta = env_meta(self.env)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on the worker, after every call submitted before it."""
        if self._closed:
            raise RuntimeError("this ThreadedEnv is closed")
        return self._pool.submit(fn, *args, **kwargs)

    def reset(self, **kwargs: Any) -> Any:
        return self.submit(self.env.reset, **kwargs).result()

    def step(self, action: Any) -> Any:
        return self.step_async(action).result()

    def step_async(self, action: Any) -> Future:
        """Start ``env.step(action)`` on the worker; the future's result is the step's 5-tuple.

        The caller must not modify ``action`` until the result has been collected.
        """
        return self.submit(self.env.step, action)

    @property
    def unwrapped(self) -> gym.Env:
        """The innermost env, for plain (non-GL, non-MuJoCo) state such as its RNGs, between calls only."""
        return self.env.unwrapped

    def close(self) -> None:
        """Close the env on its worker (after any call still running), then end the worker. Idempotent."""
        if self._closed:
            return
        try:
            self.submit(self.env.close).result()
        finally:
            self._closed = True
            self._pool.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"ThreadedEnv({self.env!r}{', closed' if self._closed else ''})"
