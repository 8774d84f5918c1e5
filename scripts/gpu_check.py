"""The one-command GPU check: CUDA tests, update throughput (CUDA graph vs eager: SAC, offline pretraining,
PPO), agent steps/s alone and sharing the GPU, and a DMC-100k decoupled ATC-SAC run, as one JSON + markdown.

    bash scripts/gpu-check.sh                       # on the GPU machine (carries what it lacks: gpu-bundle.sh)
    python scripts/gpu_check.py --out DIR           # from a source tree whose dependencies are installed
    python scripts/gpu_check.py --smoke --out DIR   # every section at toy sizes on tiny envs (seconds, any device)

Every figure is measured by this run on this machine; a section that fails or runs out of its time budget
says so in the summary instead of a number. The targets are the performance targets of docs/performance.md
("GPU"): each row says whether the measured figure meets its target.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sizes:
    """How much each section runs: the full check (about 8 minutes on one H200) or the smoke test."""

    env: str = "dmc:cartpole-swingup"
    image_size: int = 84
    warmup_steps: int = 1000
    batch_size: int = 256
    """SAC batch (the paper's) and offline pretraining batch."""
    update_steps: int = 400
    """Agent steps after the warm-up in each throughput run (steps/s is read over the last log interval)."""
    log_every: int = 200
    timed_updates: int = 200
    """SAC updates timed per path in the graph-vs-eager section (after warm-up and capture)."""
    sharing: tuple[int, ...] = (1, 4, 8)
    """How many runs share the GPU at once."""
    atari: str = "atari:Pong"
    ppo_steps: int = 8 * 2048
    pretrain_episodes: int = 8
    pretrain_updates: int = 600
    """Offline pretraining updates per path (eager, then CUDA graph); updates/s is read over the last third."""
    ppo_envs: int = 16
    ppo_horizon: int = 128
    """The PPO update section's rollout: envs x horizon samples (the paper's Atari sizes), 4 epochs x 4 minibatches."""
    ppo_image_size: int = 84
    ppo_timed_updates: int = 4
    """PPO updates timed per path (after one update of warm-up and capture)."""
    dmc100k_steps: int = 12_500
    dmc100k_eval_episodes: int = 10
    budget_s: float = 540.0
    """The whole check's time: the agents section, last, stops starting runs when it is spent (its remaining
    rows read "not run: time budget"), so the check ends within one 10-minute device call."""

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(env="tiny:point", image_size=32, warmup_steps=40, batch_size=16, update_steps=20, log_every=10,
                   timed_updates=4, sharing=(1, 2), atari="tiny:catch", ppo_steps=2 * 4 * 16, pretrain_episodes=3,
                   pretrain_updates=6, ppo_envs=4, ppo_horizon=16, ppo_image_size=36, ppo_timed_updates=1,
                   dmc100k_steps=60, dmc100k_eval_episodes=1, budget_s=600.0)


# --------------------------------------------------------------------------- helpers


def _atcrl(args: list[str], *, threads: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, "-m", "atcrl.cli", *args], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _last(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return float(values[-1]) if values else None


def _tail(log: Path, n: int = 6) -> str:
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-n:]) if log.exists() else ""


def _graph_vs_eager(measure: Callable[[bool], dict[str, Any]], rate: str) -> dict[str, Any]:
    """``measure(graph)`` for the eager path, then the CUDA-graph one, each on its own (one failing leaves the
    other's figure); with both, ``graph_vs_eager`` is the ratio of their ``rate``."""
    out: dict[str, Any] = {}
    for name, graph in (("eager", False), ("graph", True)):
        try:
            out[name] = measure(graph)
        except Exception as e:  # noqa: BLE001 -- the other path's figure still counts
            out[name] = {"error": f"{type(e).__name__}: {e}"}
            traceback.print_exc()
    if all(rate in out[name] for name in ("eager", "graph")):
        out["graph_vs_eager"] = out["graph"][rate] / out["eager"][rate]
    return out


def _sync(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def machine(device: str) -> dict[str, Any]:
    """The experiment runner's machine record (CPU model and ISA, cores, GPUs, torch and its CUDA) + the date."""
    import torch

    from atcrl.experiments.provenance import machine as describe

    info = {**describe(), "device": device, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


# --------------------------------------------------------------------------- sections


def cuda_tests(sizes: Sizes, work: Path) -> dict[str, Any]:
    """The tests marked ``cuda`` (they skip without a GPU)."""
    log = work / "cuda-tests.log"
    with log.open("w") as f:
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"],
                             cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error")}
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?)", log.read_text()):
        counts["error" if what.startswith("error") else what] = int(n)
    return {"exit_code": rc, **counts, "tail": _tail(log, 3)}


def sac_updates(sizes: Sizes, work: Path, device: str) -> dict[str, Any]:
    """SAC + online ATC updates/s on one run's replay: the eager step vs the captured graph."""
    from atcrl.rl.modes import EncoderMode
    from atcrl.train.sac_loop import SACLoopConfig, build_run, train

    def measure(graph: bool) -> dict[str, Any]:
        cfg = SACLoopConfig(env=sizes.env, image_size=sizes.image_size, mode=EncoderMode.decoupled,
                            batch_size=sizes.batch_size,
                            warmup_steps=sizes.warmup_steps, steps=sizes.warmup_steps, eval_every=0, eval_episodes=0,
                            device=device, fast=dataclasses.replace(SACLoopConfig().fast, cuda_graph=graph))
        run = build_run(cfg)
        try:
            train(run)  # the warm-up fills the replay
            step = run.step_fn
            for _ in range(12):  # eager warm-up and capture of every phase
                step()
            sync = _sync(device)
            sync()
            start = time.perf_counter()
            for _ in range(sizes.timed_updates):
                step()
            sync()
            seconds = time.perf_counter() - start
            step.read()  # and checks every metric is finite
            return {"updates_per_s": sizes.timed_updates / seconds, "captured": bool(step.graphs)}
        finally:
            run.close()

    return _graph_vs_eager(measure, "updates_per_s")


def ppo_updates(sizes: Sizes, work: Path, device: str) -> dict[str, Any]:
    """PPO minibatch updates/s (end-to-end, Atari conv) on one random rollout: the eager step vs the captured graph."""
    import torch

    from atcrl.fastpath import FastPathConfig, prepare_module
    from atcrl.nets.encoders import ConvEncoder
    from atcrl.rl.modes import EncoderMode
    from atcrl.rl.ppo import ActorCritic, PPOAgent, PPOConfig
    from atcrl.rl.rollout import Rollout
    from atcrl.train.ppo_step import PPOStep

    shape, actions = (4, sizes.ppo_image_size, sizes.ppo_image_size), 6
    g = torch.Generator().manual_seed(0)
    rollout = Rollout.empty(sizes.ppo_horizon, sizes.ppo_envs, shape, torch.uint8, device)
    T, N = sizes.ppo_horizon, sizes.ppo_envs
    rollout.inputs.copy_(torch.randint(0, 256, rollout.inputs.shape, generator=g, dtype=torch.uint8))
    rollout.actions.copy_(torch.randint(0, actions, (T, N), generator=g))
    rollout.logp.fill_(-math.log(actions))
    rollout.rewards.copy_(torch.randn(T, N, generator=g))
    rollout.terminated.copy_(torch.rand(T, N, generator=g) < 0.01)

    def measure(graph: bool) -> dict[str, Any]:
        torch.manual_seed(0)
        fast = dataclasses.replace(FastPathConfig(), cuda_graph=graph)
        net = ActorCritic(ConvEncoder("atari", shape), actions)
        agent = PPOAgent(net, EncoderMode.end_to_end, PPOConfig(), device, fast=fast)
        prepare_module(agent.net, fast)
        step = PPOStep(agent)
        agent.update(rollout, step=step)  # eager warm-up and capture
        sync = _sync(device)
        sync()
        start = time.perf_counter()
        for i in range(sizes.ppo_timed_updates):
            agent.update(rollout, progress=i / 100, step=step)  # reads its metrics once: one sync each
        sync()
        minibatches = sizes.ppo_timed_updates * agent.cfg.epochs * agent.cfg.minibatches
        return {"minibatch_updates_per_s": minibatches / (time.perf_counter() - start),
                "minibatch_size": T * N // agent.cfg.minibatches, "captured": bool(step.runner.graphs)}

    return _graph_vs_eager(measure, "minibatch_updates_per_s")


def _frozen_encoder(sizes: Sizes, work: Path) -> Path:
    """A random DMC conv exported for the frozen runs (throughput does not depend on its weights)."""
    from atcrl.encoder_io import export_encoder
    from atcrl.envs import make_env
    from atcrl.nets.encoders import ConvEncoder

    env = make_env(sizes.env, image_size=sizes.image_size)
    try:
        shape = tuple(env.observation_space.shape)
    finally:
        env.close()
    return export_encoder(ConvEncoder("dmc", shape), work / "random-encoder", objective="random", data=[])


def agents(sizes: Sizes, work: Path, device: str, deadline: float) -> list[dict[str, Any]]:
    """Agent steps/s of each agent, alone and with N runs of it sharing the device at once."""
    encoder = _frozen_encoder(sizes, work)
    sac = ["--env", sizes.env, "--sac.image-size", str(sizes.image_size), "--sac.batch-size", str(sizes.batch_size),
           "--sac.warmup-steps",
           str(sizes.warmup_steps), "--steps", str(sizes.warmup_steps + sizes.update_steps), "--sac.log-every",
           str(sizes.log_every), "--eval-every", "0", "--eval-episodes", "0"]
    graph = ["--sac.fast.cuda-graph", "True"]
    ppo_tiny = ["--ppo.image-size", str(sizes.image_size), "--ppo.encoder", "dmc", "--ppo.num-envs", "4",
                "--ppo.horizon", "16", "--ppo.atc.batch-size", "16", "--ppo.ul-replay-size", "256"]
    # (row name, flags, whether it also runs with sizes.sharing runs at once; the comparison rows run alone)
    configs: list[tuple[str, list[str], bool]] = [
        ("decoupled SAC + ATC, graph", [*sac, *graph], True),
        ("decoupled SAC + ATC, eager", sac, False),
        ("decoupled SAC + ATC, graph, env overlapped", [*sac, *graph, "--sac.overlap-env", "True"], False),
        ("RAD SAC (end-to-end), graph", ["--preset", "dmc-rad", *sac, *graph], True),
        ("frozen SAC (latent replay), graph", ["--preset", "dmc-frozen", "--encoder", str(encoder), *sac, *graph], True),
        ("PPO + ATC", ["--preset", "atari-ppo-atc", "--env", sizes.atari, "--steps", str(sizes.ppo_steps),
                       "--ppo.ul-start-steps", "0", "--ppo.rl-start-steps", "0", "--eval-episodes", "0",
                       *(ppo_tiny if sizes.atari.startswith("tiny") else [])], True),
    ]
    rows: list[dict[str, Any]] = []
    cores = os.cpu_count() or 1
    for name, args, shared in configs:
        for n in sizes.sharing if shared else (1,):
            row: dict[str, Any] = {"agent": name, "runs": n}
            rows.append(row)
            if time.perf_counter() > deadline:
                row["error"] = "not run: time budget"
                continue
            procs = []
            for i in range(n):
                out = work / f"agent-{len(rows)}-{i}"
                procs.append((out, _atcrl(["train", *args, "--device", device, "--no-tensorboard", "--seed", str(i),
                                           "--out", str(out)], threads=max(1, cores // n), log=work / f"{out.name}.log")))
            per_run = []
            for out, proc in procs:
                proc.wait()
                value = _last(_metrics(out), "perf/steps_per_s") if proc.returncode == 0 else None
                if value is None:
                    row["error"] = f"exit {proc.returncode}: {_tail(work / f'{out.name}.log')}"
                per_run.append(value)
            if "error" not in row:
                row.update(steps_per_s_each=[round(v, 1) for v in per_run], steps_per_s_total=round(sum(per_run), 1))
    return rows


def pretrain(sizes: Sizes, work: Path, device: str) -> dict[str, Any]:
    """Offline ATC pretraining (DMC preset, batch 256) on a few recorded episodes: updates/s of the eager step
    and of the CUDA graph (``updates_per_s``: the faster of the two that ran)."""
    data = work / "pretrain-data"
    log = work / "collect.log"
    proc = _atcrl(["collect", "--env", sizes.env, "--episodes", str(sizes.pretrain_episodes), "--policy", "random",
                   "--image-size", str(sizes.image_size), "--out", str(data)], threads=os.cpu_count() or 1, log=log)
    if proc.wait() != 0:
        return {"error": f"atcrl collect exit {proc.returncode}: {_tail(log)}"}

    def measure(graph: bool) -> dict[str, Any]:
        run, log = work / f"pretrain-run-{int(graph)}", work / f"pretrain-{int(graph)}.log"
        proc = _atcrl(["pretrain", "--data", str(data), "--preset", "dmc", "--updates", str(sizes.pretrain_updates),
                       "--batch-size", str(sizes.batch_size), "--warmup-updates", "1",
                       "--log-every", str(max(1, sizes.pretrain_updates // 3)), "--eval-every",
                       str(sizes.pretrain_updates), "--fast.cuda-graph" if graph else "--fast.no-cuda-graph",
                       "--device", device, "--no-tensorboard", "--out", str(run)], threads=os.cpu_count() or 1, log=log)
        if proc.wait() != 0:
            raise RuntimeError(f"atcrl pretrain exit {proc.returncode}: {_tail(log)}")
        return {"updates_per_s": _last(_metrics(run), "perf/updates_per_s")}

    out = _graph_vs_eager(measure, "updates_per_s")
    rates = [out[name]["updates_per_s"] for name in ("eager", "graph") if "updates_per_s" in out[name]]
    return {**out, "updates_per_s": max(rates) if rates else None, "batch_size": sizes.batch_size,
            "device_data": "auto (on with CUDA)"}


def dmc100k(sizes: Sizes, work: Path, device: str) -> dict[str, Any]:
    """Decoupled ATC-SAC to its end at the DMC-100k budget, CUDA graph on: final return and wall time."""
    out = work / "dmc100k"
    args = ["train", "--env", sizes.env, "--sac.image-size", str(sizes.image_size), "--sac.batch-size",
            str(sizes.batch_size), "--steps", str(sizes.dmc100k_steps),
            "--sac.warmup-steps", str(sizes.warmup_steps), "--sac.fast.cuda-graph", "True", "--eval-every", "0",
            "--eval-episodes", str(sizes.dmc100k_eval_episodes), "--device", device, "--no-tensorboard",
            "--out", str(out)]
    start = time.perf_counter()
    proc = _atcrl(args, threads=os.cpu_count() or 1, log=work / "dmc100k.log")
    if proc.wait() != 0:
        return {"error": f"exit {proc.returncode}: {_tail(work / 'dmc100k.log')}"}
    rows = _metrics(out)
    return {"wall_s": round(time.perf_counter() - start, 1), "final_return": _last(rows, "eval/return_mean"),
            "env_steps": _last(rows, "perf/env_steps"), "agent_steps": sizes.dmc100k_steps,
            "eval_episodes": sizes.dmc100k_eval_episodes}


# --------------------------------------------------------------------------- targets and summary

TARGETS: list[tuple[str, str, float, Callable[[dict[str, Any]], float | None]]] = [
    ("decoupled ATC-SAC, one run, agent steps/s", ">=", 300,
     lambda s: _agent_total(s, "decoupled SAC + ATC, graph", 1)),
    ("8 decoupled runs sharing one GPU, total agent steps/s", ">=", 1000,
     lambda s: _agent_total(s, "decoupled SAC + ATC, graph", 8)),
    ("offline ATC pretraining, updates/s", ">=", 300, lambda s: s.get("pretrain", {}).get("updates_per_s")),
    ("PPO + ATC (16 envs), agent steps/s", ">=", 4000, lambda s: _agent_total(s, "PPO + ATC", 1)),
    ("SAC update, graph vs eager", ">=", 5, lambda s: s.get("sac_updates", {}).get("graph_vs_eager")),
    ("DMC-100k decoupled ATC-SAC final return", ">=", 750, lambda s: s.get("dmc100k", {}).get("final_return")),
]


def _agent_total(sections: dict[str, Any], agent: str, runs: int) -> float | None:
    for row in sections.get("agents", []):
        if row["agent"] == agent and row["runs"] == runs:
            return row.get("steps_per_s_total")
    return None


def targets(sections: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, op, target, get in TARGETS:
        value = get(sections)
        rows.append({"target": name, "wanted": f"{op} {target}", "measured": value,
                     "met": None if value is None else bool(value >= target)})
    return rows


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    header = (f"Machine: {m.get('gpu', 'no GPU')} ({m.get('gpu_memory_gib', '-')} GiB, CUDA {m.get('cuda', '-')}), "
              f"{m['cpu']} ({m['cores']} cores; {', '.join(m['isa']) or 'no AVX2'}), torch {m['torch']}, {m['date']}. "
              f"Sizes: {report['sizes']['env']}{' (smoke test)' if report['smoke'] else ''}. "
              "Every figure below was measured by this run.")
    lines = ["# GPU check", "", header, "", "| target | wanted | measured | met |", "|---|---|---|---|"]
    for t in report["targets"]:
        value = "not measured" if t["measured"] is None else f"{t['measured']:.1f}"
        lines.append(f"| {t['target']} | {t['wanted']} | {value} | {'-' if t['met'] is None else 'yes' if t['met'] else 'no'} |")
    s = report["sections"]
    lines += ["", "## Agents (agent steps/s, training throughput with the env, after the warm-up)", "",
              "| agent | runs sharing the device | each | total |", "|---|---|---|---|"]
    for row in s.get("agents", []):
        each = ", ".join(map(str, row.get("steps_per_s_each", []))) or row.get("error", "")
        lines.append(f"| {row['agent']} | {row['runs']} | {each} | {row.get('steps_per_s_total', '-')} |")
    lines += ["", "## Updates/s, CUDA graph vs eager (the same step; on the CPU both run eagerly)", "",
              "| update | eager | graph | graph vs eager |", "|---|---|---|---|"]
    for name, section, rate in (("SAC + online ATC", "sac_updates", "updates_per_s"),
                                ("offline ATC pretraining", "pretrain", "updates_per_s"),
                                ("PPO minibatch", "ppo_updates", "minibatch_updates_per_s")):
        got = s.get(section) or {}
        cells = [_cell(got.get(path, {}), rate) for path in ("eager", "graph")]
        ratio = got.get("graph_vs_eager")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {'-' if ratio is None else f'{ratio:.2f}'} |")
    for name in ("sac_updates", "pretrain", "ppo_updates", "dmc100k", "cuda_tests"):
        lines += ["", f"## {name}", "", "```", json.dumps(s.get(name), indent=1), "```"]
    if report["errors"]:
        lines += ["", "## Errors", ""] + [f"- {k}: {v}" for k, v in report["errors"].items()]
    return "\n".join(lines) + "\n"


def _cell(path: dict[str, Any], rate: str) -> str:
    if rate in path and path[rate] is not None:
        return f"{path[rate]:.1f}"
    return path.get("error", "not measured")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where gpu-check.json and gpu-check.md are written")
    parser.add_argument("--device", default="auto", help='"auto" (CUDA when available), "cuda", "cpu"')
    parser.add_argument("--smoke", action="store_true", help="toy sizes on tiny envs: checks the check, not the GPU")
    parser.add_argument("--sections", default="cuda_tests,sac_updates,pretrain,ppo_updates,dmc100k,agents",
                        help="comma-separated subset of the sections, in this order")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from atcrl.device import resolve_device

    device = str(resolve_device(args.device))
    sizes = Sizes.smoke() if args.smoke else Sizes()
    deadline = time.perf_counter() + sizes.budget_s - 30  # the last runs started still have to finish
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(device), "sizes": dataclasses.asdict(sizes), "smoke": args.smoke,
                              "device": device, "sections": {}, "errors": {}, "seconds": {}}
    runners: dict[str, Callable[[Path], Any]] = {
        "cuda_tests": lambda w: cuda_tests(sizes, w),
        "sac_updates": lambda w: sac_updates(sizes, w, device),
        "pretrain": lambda w: pretrain(sizes, w, device),
        "ppo_updates": lambda w: ppo_updates(sizes, w, device),
        "agents": lambda w: agents(sizes, w, device, deadline),
        "dmc100k": lambda w: dmc100k(sizes, w, device),
    }
    wanted = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(wanted) - set(runners))
    if unknown:
        parser.error(f"unknown sections {unknown}: choose from {', '.join(runners)}")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name in wanted:
            start = time.perf_counter()
            print(f"[gpu-check] {name} ...", flush=True)
            try:
                report["sections"][name] = runners[name](Path(tmp))
            except Exception as e:  # noqa: BLE001 -- one failing section must not cost the others' figures
                report["errors"][name] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
            report["seconds"][name] = round(time.perf_counter() - start, 1)
            print(f"[gpu-check] {name} done in {report['seconds'][name]} s", flush=True)
            report["targets"] = targets(report["sections"])
            (args.out / "gpu-check.json").write_text(json.dumps(report, indent=1))  # after every section
            (args.out / "gpu-check.md").write_text(markdown(report))
    print((args.out / "gpu-check.md").read_text())
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
