"""Data-parallel pretraining with 2 CPU processes on gloo (one torchrun launch serves every check).

The worker (this file run by torchrun) does two things:
1. Gradient equivalence: both ranks train a copy of ATC on their half of fixed global batches
   through the same DDP wrapper and update step as ``atcrl pretrain``; rank 0 then replays the same
   updates in one process with loss = mean of the two half-batch losses (each half contrasts its own
   rows, as documented). Gradients, losses, weights and momentum targets must match.
2. ``run_pretrain`` end to end under DDP on a recorded dataset.
The pytest side checks what the workers wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atcrl.data.batches import PairBatch
from atcrl.nets.encoders import ConvEncoder
from atcrl.train.distributed import average_metrics, init_distributed, wrap_for_ddp
from atcrl.ul.atc import ATCConfig
from atcrl.ul.optim import ULOptimConfig, apply_ul_loss, make_ul_optimizer
from atcrl.ul.registry import make_objective

SHAPE = (9, 40, 40)
GLOBAL_BATCH = 16
STEPS = 3
ROOT = Path(__file__).resolve().parents[1]


def fixed_batch(step: int) -> PairBatch:
    g = torch.Generator().manual_seed(100 + step)
    anchor, positive = (torch.randint(0, 256, (GLOBAL_BATCH, *SHAPE), dtype=torch.uint8, generator=g) for _ in "ap")
    valid = torch.ones(GLOBAL_BATCH, dtype=torch.bool)
    valid[[2, 11]] = False  # masked rows, so the halves differ in their number of valid rows
    return PairBatch(anchor=anchor, positive=positive, valid=valid,
                     actions=torch.zeros(GLOBAL_BATCH, 1, 2), task=torch.zeros(GLOBAL_BATCH, dtype=torch.int64))


def half(batch: PairBatch, rank: int) -> PairBatch:
    n = GLOBAL_BATCH // 2
    rows = slice(rank * n, (rank + 1) * n)
    return PairBatch(batch.anchor[rows], batch.positive[rows], batch.valid[rows], batch.actions[rows],
                     batch.task[rows])


def build():
    torch.manual_seed(0)
    # No augmentation: the two processes must see exactly the rows the reference sees.
    cfg = ATCConfig(batch_size=GLOBAL_BATCH, latent_size=16, predictor_hidden=32, augment=False, target_tau=0.1)
    objective = make_objective("atc", ConvEncoder("dmc", SHAPE), cfg)
    optimizer, scheduler = make_ul_optimizer(objective, ULOptimConfig(lr=1e-3, warmup_updates=0, total_updates=10))
    return objective, optimizer, scheduler


def grads(objective) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in objective.named_parameters() if p.grad is not None}


def gradient_equivalence(dist, out: Path) -> None:
    objective, optimizer, scheduler = build()
    forward = wrap_for_ddp(objective, dist, torch.device("cpu"))
    losses, first_grads = [], None
    for step in range(STEPS):
        loss, metrics = forward(half(fixed_batch(step), dist.rank))
        apply_ul_loss(objective, optimizer, scheduler, loss, grad_clip=10.0)
        losses.append(average_metrics({"loss": metrics["ul/loss"]}, dist, torch.device("cpu"))["loss"])
        if step == 0:
            first_grads = grads(objective)
    flat = torch.cat([t.flatten().float() for t in objective.state_dict().values()])
    everyone = [torch.empty_like(flat) for _ in range(dist.world_size)]
    torch.distributed.all_gather(everyone, flat)
    if dist.rank != 0:
        return
    reference, ref_opt, ref_sched = build()
    ref_losses, ref_grads = [], None
    for step in range(STEPS):
        parts = [reference.loss(half(fixed_batch(step), r)) for r in range(dist.world_size)]
        loss = sum(p[0] for p in parts) / len(parts)
        apply_ul_loss(reference, ref_opt, ref_sched, loss, grad_clip=10.0)
        ref_losses.append(sum(p[1]["ul/loss"] for p in parts) / len(parts))
        if step == 0:
            ref_grads = grads(reference)
    torch.save({"ddp_grads": first_grads, "ref_grads": ref_grads, "ddp_losses": losses, "ref_losses": ref_losses,
                "ddp_state": objective.state_dict(), "ref_state": reference.state_dict(),
                "max_rank_difference": max(float((e - everyone[0]).abs().max()) for e in everyone)},
               out / "equivalence.pt")


def worker(out: Path, data: str) -> None:
    from atcrl.train.pretrain import PretrainConfig, run_pretrain

    dist = init_distributed("cpu")
    assert dist.world_size == 2 and dist.owns_group
    gradient_equivalence(dist, out)
    cfg = PretrainConfig(data=(data,), out=str(out / "run"), updates=6, batch_size=16, log_every=3, eval_every=3,
                         ckpt_every=3, val_fraction=0.34, val_batches=1, tensorboard=False)
    code = run_pretrain(cfg)
    (out / f"rank{dist.rank}.code").write_text(str(code))
    dist.barrier()  # both ranks tear the group down together
    dist.close()


@pytest.fixture(scope="module")
def ddp_outputs(tmp_path_factory) -> Path:
    from test_pretrain import record_dataset

    out = tmp_path_factory.mktemp("ddp")
    data = record_dataset(out / "data", episodes=6)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         __file__, str(out), str(data)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_ddp_gradients_are_the_average_of_the_ranks(ddp_outputs):
    r = torch.load(ddp_outputs / "equivalence.pt", weights_only=True)
    assert r["ddp_grads"].keys() == r["ref_grads"].keys() and len(r["ddp_grads"]) > 4
    for k, g in r["ddp_grads"].items():
        torch.testing.assert_close(g, r["ref_grads"][k], rtol=1e-4, atol=1e-6, msg=f"gradient of {k}")
    assert r["ddp_losses"] == pytest.approx(r["ref_losses"], rel=1e-5)
    for k, v in r["ddp_state"].items():  # online weights and momentum targets after 3 updates
        torch.testing.assert_close(v, r["ref_state"][k], rtol=1e-4, atol=1e-6, msg=f"state {k}")
    assert r["max_rank_difference"] == 0.0  # every rank holds bit-identical weights and targets


def test_ddp_run_pretrain_rank0_writes_everything(ddp_outputs):
    from atcrl.checkpoint import load_checkpoint
    from atcrl.encoder_io import load_encoder
    from atcrl.metrics_log import read_jsonl

    run = ddp_outputs / "run"
    assert [(ddp_outputs / f"rank{r}.code").read_text() for r in (0, 1)] == ["0", "0"]
    state = load_checkpoint(run / "checkpoints", kind="pretrain").state
    assert state["update"] == 6 and state["world_size"] == 2
    steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "ul/loss" in r]
    assert steps == [3, 6]  # one record per log step: only rank 0 writes
    assert load_encoder(run, expect_in_shape=SHAPE).feature_shape == (32, 2, 2)


if __name__ == "__main__":
    worker(Path(sys.argv[1]), sys.argv[2])
