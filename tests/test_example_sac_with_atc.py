"""examples/sac_with_atc.py runs a few hundred steps: SAC acts and learns, and ATCLoss trains the encoder."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import atcrl

SCRIPT = Path(atcrl.__file__).parents[1] / "examples" / "sac_with_atc.py"


def test_sac_with_atc_example_runs_and_the_atc_loss_falls():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parents[1])}
    done = subprocess.run([sys.executable, str(SCRIPT), "--steps", "300", "--start", "100", "--batch", "32"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(summary["episode_returns"]) == 300 // 50  # tiny:point episodes are 50 steps
    losses = summary["atc_losses"]
    assert losses[0] > 3.0  # about log(32): chance for a batch of 32
    assert sum(losses[-5:]) / 5 < losses[0] - 0.3, losses
    assert math.isfinite(summary["q_loss"])
