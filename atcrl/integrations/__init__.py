"""Adapters to other RL libraries; each submodule needs its library installed (an atcrl extra)."""
