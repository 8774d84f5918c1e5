"""The `atcrl` command: one subcommand per job, each a typed config dataclass plus a run function.

Subcommands are imported lazily so `atcrl --help` stays fast and a missing optional extra only
affects the command that needs it. Each config's field docstrings are its --help text.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

import tyro

from atcrl.failures import EXIT_BAD_INPUT, EXIT_INTERRUPTED, debug_wanted, exit_code, failure_line


@dataclass(frozen=True)
class Command:
    module: str
    config: str
    run: str
    summary: str


COMMANDS: dict[str, Command] = {
    "train": Command("atcrl.train.train_cli", "TrainConfig", "run_train",
                     "train an RL agent from pixels (default: decoupled ATC-SAC on dmc:cartpole-swingup); resumable"),
    "evaluate": Command("atcrl.train.evaluate", "EvaluateConfig", "run_evaluate",
                        "run deterministic episodes of a trained agent (mean/std return, optional video)"),
    "envs": Command("atcrl.envs.report", "EnvsConfig", "run_envs",
                    "list environment families: installed? renders? steps/s"),
    "dataset info": Command("atcrl.data.dataset_cli", "InfoConfig", "run_info",
                            "summarise an episode dataset directory"),
    "dataset validate": Command("atcrl.data.dataset_cli", "ValidateConfig", "run_validate",
                                "check every episode file of a dataset; non-zero exit if any is bad"),
    "dataset import-minari": Command("atcrl.data.dataset_cli", "ImportMinariConfig", "run_import_minari",
                                     "convert a local Minari dataset into an atcrl dataset"),
    "dataset export-minari": Command("atcrl.data.dataset_cli", "ExportMinariConfig", "run_export_minari",
                                     "write an atcrl dataset as a local Minari dataset"),
    "pretrain": Command("atcrl.train.pretrain", "PretrainConfig", "run_pretrain",
                        "pretrain an encoder with a UL objective on recorded episodes (DDP under torchrun)"),
    "collect": Command("atcrl.train.collect", "CollectConfig", "run_collect",
                       "record episodes of a policy into an atcrl dataset (resumable with --append)"),
    "probe": Command("atcrl.train.probe_cli", "ProbeConfig", "run_probe",
                     "linear-probe an encoder: R^2 of the physics state from its features, held-out episodes"),
    "export": Command("atcrl.export_cli", "ExportConfig", "run_export",
                      "export the encoder of a run's checkpoint as safetensors + json"),
    "experiment": Command("atcrl.experiments.cli", "ExperimentConfig", "run_experiment",
                          "run a paper experiment (online, ul-benchmark, multitask, ablations, latent-replay) at full "
                          "or cpu-small scale; resumable"),
    "report": Command("atcrl.report.cli", "ReportConfig", "run_report",
                      "markdown tables and PNG plots from experiment/run directories, with the paper's anchor numbers"),
    "bench": Command("atcrl.bench.cli", "BenchConfig", "run_bench",
                     "benchmark the machine and the fast path vs fp32 eager -> bench.json + bench.md (bench/out/)"),
}


HELP_FLAGS = ("-h", "--help", "help")


def _usage(group: str | None = None) -> str:
    """The command list; with ``group`` ("dataset"), only that group's subcommands."""
    names = [n for n in COMMANDS if group is None or n.startswith(f"{group} ")]
    width = max(len(name) for name in names)
    head = "atcrl COMMAND" if group is None else f"atcrl {group} SUBCOMMAND"
    lines = [f"usage: {head} [options]   ({head} --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {COMMANDS[name].summary}" for name in names]
    return "\n".join(lines)


def _group_help(argv: list[str]) -> str | None:
    """The usage of a command group asked for as `atcrl dataset`, `atcrl dataset --help`, ..."""
    groups = {name.split()[0] for name in COMMANDS if " " in name}
    if argv[0] in groups and (len(argv) == 1 or argv[1] in HELP_FLAGS):
        return _usage(argv[0])
    return None


def _resolve(argv: list[str]) -> tuple[str, list[str]]:
    """Longest command name matching the leading words of argv (handles `dataset info`)."""
    for n_words in (2, 1):
        name = " ".join(argv[:n_words])
        if len(argv) >= n_words and name in COMMANDS:
            return name, argv[n_words:]
    import difflib

    wanted = " ".join(argv[:2]) if argv[0] == "dataset" else argv[0]
    close = difflib.get_close_matches(wanted, COMMANDS, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    print(f"atcrl: unknown command {wanted!r}.{hint}\n\n{_usage()}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)  # a usage error, like tyro's for a bad option


def main(argv: list[str] | None = None) -> int:
    """Run one command; an exception it does not handle becomes one line on stderr and exit code 1 (3 for a
    divergence; ``--debug`` anywhere on the command line, or ATCRL_DEBUG=1, shows the traceback instead)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or debug_wanted()
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in HELP_FLAGS:
        print(_usage())
        return 0
    if (group := _group_help(argv)) is not None:
        print(group)
        return 0
    if argv[0] in ("-V", "--version"):
        from atcrl.version import __version__

        print(__version__)
        return 0
    name, rest = _resolve(argv)
    cmd = COMMANDS[name]
    module = importlib.import_module(cmd.module)
    config = tyro.cli(getattr(module, cmd.config), args=rest, prog=f"atcrl {name}", description=cmd.summary)
    try:
        return int(getattr(module, cmd.run)(config) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\natcrl {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if debug:
            raise
        print(f"atcrl {name}: error: {failure_line(e)}", file=sys.stderr)
        return exit_code(e)


if __name__ == "__main__":
    raise SystemExit(main())
