"""atcrl: decoupled representation learning for RL from pixels (Augmented Temporal Contrast)."""

__version__ = "0.1.0"
