"""atcrl: decoupled representation learning for RL from pixels (Augmented Temporal Contrast).

The public API is ``__all__`` (docs/api.md); its names load on first use, so ``import atcrl`` imports no torch.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["Pretrained", "__version__", "collect", "load_encoder", "make_env", "pretrain"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from atcrl import api

        return getattr(api, name)
    raise AttributeError(f"module 'atcrl' has no attribute {name!r}")
