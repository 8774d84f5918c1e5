"""The paper's experiments, each one command (`atcrl experiment NAME`) at several scales.

Experiments (one module each; `atcrl experiment --list` prints the claim each tests and its cost):
  online         decoupled ATC vs end-to-end RL, online (SAC on DMC, PPO on Atari)
  ul-benchmark   expert demonstrations -> every UL objective -> linear probe + frozen SAC
  multitask      one encoder pretrained on several domains, frozen, on seen and unseen tasks
  ablations      ATC without augmentation / momentum / predictor / W, other Δt, AC
  latent-replay  frozen-encoder SAC replaying latents (sub-pixel shift) vs pixels vs unshifted latents

Scales: ``full`` (the paper's budget), ``cpu-small`` (about an hour on a 2-core CPU with --jobs 2;
each module's NOTES say what is reduced and why), ``gpu`` (online and ul-benchmark: one GPU shared by
all runs with --device cuda --jobs 8, the paper's settings but for the named reductions in
scales.GPU_REDUCTIONS) and ``tiny`` (a smoke test of seconds, for tests).

Modules: spec (Step, Experiment), commands (step builders and run sizes), scales (sizes shared per
scale), offline (expert -> demonstrations), one module per experiment, plans (registry), cost (time
estimates on CPU and on one GPU), provenance (git state, machine, content hashes), inputs (what a
step reads; the refusal of changed inputs), record (experiment.json), outputs (when a step is
complete; how it is continued), executors (local subprocesses), ray_executor (Ray tasks), runner
(execution), cli (`atcrl experiment`).

Directory contract (what `atcrl report` reads). OUT/experiment.json is rewritten atomically after
every change of a step's state:

    {"name": str, "scale": "full" | "cpu-small" | "gpu" (| "tiny" for smoke tests), "seeds": [int, ...],
     "question": str,   # the paper claim tested
     "notes": str,      # how this scale differs from the paper, and why
     "created": ISO time, "machine": MACHINE, "git_commit": str | null, "git_dirty": bool | null,
         # machine and git state of the invocation that created the record (kept by every re-run)
     "command": [argv of the `atcrl experiment` invocation],
     "steps": [{"id": str,          # unique, filesystem-safe; also the output path relative to OUT
                "kind": "train" | "collect" | "pretrain" | "probe" | "export",
                "group": str,       # what is compared, e.g. "online-dmc", "frozen-rl", "probe", "pretrain"
                "variant": str,     # the compared thing, e.g. "decoupled-atc", "end-to-end", "atc", "no-momentum"
                "seed": int, "env": str | null, "depends": [ids],
                "command": [argv after `atcrl`],   # paths relative to OUT (steps run with cwd OUT)
                "out": str,         # relative path: a directory (train/pretrain/collect) or a .json file (probe)
                "status": "pending" | "running" | "done" | "failed" | "skipped",
                "returncode": int | null, "wall_time_s": float | null,   # summed over all attempts
                # provenance (provenance.py, inputs.py), once the step has started:
                "git_commit": str | null, "git_dirty": bool | null, "machine": MACHINE | null,
                    # of the first attempt that made its current output (a resumed attempt keeps them)
                "attempts": [{"started", "finished", "command", "continued": bool, "wall_time_s",
                              "returncode", "git_commit", "git_dirty", "machine"}, ...],
                "inputs": {path: "sha256:..." | null},   # every input when the step last started
                "output_hash": "sha256:...",             # of its output, when done
                # extra keys: "log" (OUT-relative log file), "estimate_s", "ran_command" (argv of the last
                # attempt, e.g. with --resume), "log_tail" (failed/skipped: why), "started", "finished"
               }, ...]}
    MACHINE = {"cpu": str, "isa": [flags among avx2, avx512f, amx_bf16, ...], "cores": int, "usable_cores": int,
               "gpus": [{"name", "memory_mib", "driver", "driver_cuda"}], "torch": str, "torch_cuda": str | null,
               "python": str, "platform": str}

Inputs: a step reads its dependencies' outputs (relative paths) and, by absolute path, outputs of
other experiments (--expert/--data/--probe-data/--encoder). A run refuses to start (exit 2, one line)
when an input's content hash differs from the one its producing step recorded, or from the one a
step of this experiment recorded when it read it.

Outputs by kind, as the commands write them:
  train     OUT/<id>/: config.json ("loop" incl. "action_repeat", "steps"), metrics.jsonl (rows with "step"
            = agent steps; evaluation rows "eval/return_mean", "eval/return_std"; training rows
            "rl/episode_return", "perf/steps_per_s"), summary.json, checkpoints/
  pretrain  OUT/<id>/: metrics.jsonl ("ul/*" training rows, "val/accuracy", "val/loss" validation rows),
            config.json, encoder.safetensors + encoder.json (the exported encoder)
  collect   OUT/<id>/: a dataset (meta.json, episodes/)
  probe     OUT/<id>.json: the `atcrl probe --out` result ("mean_r2"; per task "targets", "r2", "r2_ci", "test_episodes", ...; "baseline")
Logs: OUT/<id>.log (stdout+stderr of every attempt; beside the output because the commands refuse to
write into a non-empty directory).
"""
