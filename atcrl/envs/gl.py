"""Headless OpenGL selection for dm_control (MuJoCo) and MiniWorld (pyglet).

Both libraries read their GL backend from environment variables at import time, so the choice has to be
made before the first import. A user's own setting always wins; otherwise EGL is used when libEGL can be
loaded (GPU or software EGL, no display needed) and OSMesa otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import warnings

_HEADLESS = ("egl", "osmesa")


def egl_available() -> bool:
    """True when a libEGL shared library can be loaded in this process."""
    for name in (ctypes.util.find_library("EGL"), "libEGL.so.1", "libEGL.so"):
        if not name:
            continue
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def configure_headless_gl() -> str:
    """Set MUJOCO_GL and PYOPENGL_PLATFORM when the user has not; return the MuJoCo backend in use.

    The two variables must agree (dm_control refuses e.g. MUJOCO_GL=egl with PYOPENGL_PLATFORM=osmesa),
    so a value the user set for one of them decides the other.
    """
    backend = os.environ.get("MUJOCO_GL")
    if not backend:
        user_platform = os.environ.get("PYOPENGL_PLATFORM", "")
        backend = user_platform if user_platform in _HEADLESS else ("egl" if egl_available() else "osmesa")
        os.environ["MUJOCO_GL"] = backend
    if backend in _HEADLESS:
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    if os.environ.get("PYOPENGL_PLATFORM") == "egl":
        # pyglet (MiniWorld) reads PYGLET_* options when it is first imported; headless means EGL.
        os.environ.setdefault("PYGLET_HEADLESS", "true")
    return backend


def configure_pyglet_headless() -> None:
    """Make pyglet (MiniWorld's renderer) render through EGL without a display.

    Must run before miniworld is imported. Skipped when the user chose a non-EGL PyOpenGL platform
    (e.g. glx with a real display), since pyglet's headless mode only works through EGL.
    """
    configure_headless_gl()
    if os.environ.get("PYOPENGL_PLATFORM") != "egl":
        return
    import pyglet

    if "pyglet.window" in sys.modules and not pyglet.options["headless"] and not os.environ.get("DISPLAY"):
        raise RuntimeError(
            "pyglet was set up for a display before atcrl could make it headless and there is no DISPLAY; "
            "import atcrl.envs before miniworld/pyglet, or set PYGLET_HEADLESS=true"
        )
    pyglet.options["headless"] = True


def check_dm_control_backend() -> None:
    """Catch dm_control imported before a backend was chosen: it then uses GLFW, which needs a display.

    Without a display that can only fail later with an opaque "gladLoadGL error", so say why now.
    """
    render = sys.modules.get("dm_control._render")
    chosen = os.environ.get("MUJOCO_GL")
    used = getattr(render, "BACKEND", chosen) if render is not None else chosen
    if used == chosen:
        return
    message = (
        f"dm_control was imported before atcrl chose MUJOCO_GL={chosen!r}, so it renders with "
        f"{used or 'its default (GLFW)'}; import atcrl.envs before dm_control, or set MUJOCO_GL yourself"
    )
    if (used in (None, "glfw")) and not os.environ.get("DISPLAY"):
        raise RuntimeError(message + " (there is no DISPLAY for GLFW)")
    warnings.warn(message, RuntimeWarning, stacklevel=3)
