"""The online experiment's DMLab section: recurrent PPO presets on the DeepMind Lab stand-in (plans only;
the presets dmlab-ppo* and the ppo_lstm agent come from the recurrent-agent work)."""

from __future__ import annotations

from atcrl.experiments import plans
from atcrl.experiments.cli import ExperimentConfig, run_experiment
from atcrl.experiments.online import LAB_TASKS, LAB_VARIANTS

PRESETS = {"dmlab-ppo", "dmlab-ppo-atc", "dmlab-ppo-rl-atc"}


def flag(command: tuple[str, ...], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def lab_steps(scale: str, seeds: int | None = None):
    return [s for s in plans.build("online", scale, seeds).steps if s.group == "online-dmlab"]


def test_full_scale_runs_every_variant_on_both_stand_ins_for_25m_steps():
    steps = lab_steps("full", 1)
    assert {(s.env, flag(s.command, "--preset")) for s in steps} == {(e, p) for e in LAB_TASKS for p in PRESETS}
    assert len(steps) == len(LAB_TASKS) * len(LAB_VARIANTS)
    assert all(flag(s.command, "--steps") == "25000000" for s in steps)
    # The paper's settings: every --ppo-lstm.* flag left at the presets' defaults.
    assert not any(tok.startswith("--ppo-lstm.") for s in steps for tok in s.command)
    assert {s.variant for s in steps} == {"end-to-end", "decoupled-atc", "rl-atc"}
    assert len(lab_steps("full", 3)) == 3 * len(steps)


def test_cpu_small_is_four_rooms_with_scaled_ul_and_rl_starts_for_the_atc_variants_only():
    steps = lab_steps("cpu-small", 1)
    assert {s.env for s in steps} == {"miniworld:FourRooms"}
    assert {flag(s.command, "--preset") for s in steps} == PRESETS
    for step in steps:
        assert flag(step.command, "--steps") == "16384" and step.estimate_s < 15 * 60
        atc = flag(step.command, "--preset") != "dmlab-ppo"
        assert (flag(step.command, "--ppo-lstm.ul-start-steps"), flag(step.command, "--ppo-lstm.rl-start-steps")) == (
            ("2048", "4096") if atc else (None, None))
        assert not any(tok.startswith("--ppo.") for tok in step.command)


def test_tiny_has_no_dmlab_section():
    assert lab_steps("tiny") == []


def test_dry_run_lists_the_dmlab_commands(tmp_path, capsys):
    out = tmp_path / "exp"
    assert run_experiment(ExperimentConfig("online", scale="cpu-small", out=str(out), dry_run=True, seeds=1)) == 0
    printed = capsys.readouterr().out
    for preset in PRESETS:
        assert f"--preset {preset} --env miniworld:FourRooms" in printed
    assert not out.exists()
