"""Derived figures (ratios to fp32 eager, GFLOP/s, roofline fractions) and the markdown of `atcrl bench`."""

from __future__ import annotations

from typing import Any


def derive(report: dict[str, Any]) -> None:
    """Add ratio_vs_eager, gflops and roofline fractions to the rows that have what they need (in place)."""
    sections = report["sections"]
    roof = sections.get("roofline", {})
    peaks = {p: roof[p]["gflops"] for p in ("fp32", "bf16") if isinstance(roof.get(p), dict)}
    encoder = sections.get("encoder", {})
    for row in encoder.get("rows", []):
        flops = encoder["flops_per_image"][row["arch"]]
        _add_compute(row, flops * row["per_s"], peaks, row["fastpath"]["bf16"])
        ref = _find(encoder["rows"], variant="fp32 eager", arch=row["arch"], batch=row["batch"])
        _add_ratio(row, ref, "per_s")
        _add_ratio(row, ref, "per_cpu_s", "ratio_vs_eager_cpu")
    for row in sections.get("atc", {}).get("rows", []):
        _add_compute(row, row["flops_per_update"] * row["timing"]["per_s"], peaks, row["fastpath"]["bf16"])
        ref = _find(sections["atc"]["rows"], variant="fp32 eager", preset=row["preset"])
        if ref is not None:
            row["ratio_vs_eager"] = row["timing"]["per_s"] / ref["timing"]["per_s"]
            row["ratio_vs_eager_cpu"] = row["timing"]["per_cpu_s"] / ref["timing"]["per_cpu_s"]
    allocator = sections.get("allocator", {}).get("rows", [])
    for row in allocator:
        _add_ratio(row, allocator[0] if allocator else None, "per_s")
    agents = sections.get("agents", {}).get("rows", [])
    for row in agents:
        ref = _find(agents, variant="fp32 eager", agent=row.get("agent"))
        if ref is not None and row.get("steps_per_s") and ref.get("steps_per_s"):
            row["ratio_vs_eager"] = row["steps_per_s"] / ref["steps_per_s"]
        fast = _find(agents, variant="fast path", agent=row.get("agent"))
        if row.get("variant") != "fast path" and fast is not None and row.get("steps_per_s") and fast.get("steps_per_s"):
            row["ratio_vs_fast"] = row["steps_per_s"] / fast["steps_per_s"]
    if "error" not in sections.get("scaling", {"error": None}):
        _derive_scaling(sections["scaling"])


def _derive_scaling(r: dict[str, Any]) -> None:
    """GFLOP/s, fractions of the section's own fp32 and bf16 roofline, and ratios, on the scaling rows."""
    roof = r.get("roofline", {})
    peaks = {p: roof[p]["gflops"] for p in ("fp32", "bf16") if isinstance(roof.get(p), dict)}
    encoder, atc = r.get("encoder", []), r.get("atc", [])
    for row in encoder:
        _add_fractions(row, r["flops_per_image"][row["arch"]] * row["per_s"], peaks)
        _add_ratio(row, _find(encoder, variant="fp32 eager", arch=row["arch"], batch=row["batch"]), "per_s")
    for row in atc:
        row["images_per_cpu_s"] = 2 * row["batch"] * row["per_cpu_s"]
        _add_fractions(row, row["flops_per_update"] * row["updates_per_s"], peaks)
        _add_ratio(row, _find(atc, variant="fp32 eager", batch=row["batch"]), "updates_per_s")
    envs = r.get("envs", [])
    for row in envs:  # speed-up over the fewest envs of the same spec
        same = [x for x in envs if x["spec"] == row["spec"] and x["vector"] == row["vector"]]
        _add_ratio(row, min(same, key=lambda x: x["num_envs"]), "env_steps_per_s", "speedup")
    ddp = r.get("ddp", [])
    first = r.get("ddp_processes", [1])[0]
    for row in ddp:
        _add_ratio(row, _find(ddp, variant=row["variant"], processes=first), "updates_per_s", "speedup")
        _add_ratio(row, _find(ddp, variant="fp32 eager", processes=row["processes"]), "updates_per_s")


def _add_fractions(row: dict[str, Any], flops_per_s: float, peaks: dict[str, float]) -> None:
    row["gflops"] = flops_per_s / 1e9
    for p, peak in peaks.items():
        row[f"{p}_roofline_fraction"] = row["gflops"] / peak


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _add_ratio(row: dict[str, Any], ref: dict[str, Any] | None, key: str, name: str = "ratio_vs_eager") -> None:
    if ref is not None and ref.get(key):
        row[name] = row[key] / ref[key]


def _add_compute(row: dict[str, Any], flops_per_s: float, peaks: dict[str, float], bf16: bool) -> None:
    row["gflops"] = flops_per_s / 1e9
    own = peaks.get("bf16" if bf16 else "fp32")
    if own:
        row["roofline_fraction"] = row["gflops"] / own
    if peaks.get("bf16"):
        row["bf16_roofline_fraction"] = row["gflops"] / peaks["bf16"]


# --------------------------------------------------------------------------- markdown


def _f(value: Any, fmt: str = ".0f", suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:{fmt}}{suffix}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def write_markdown(report: dict[str, Any]) -> str:
    m, sec = report["machine"], report["sections"]
    machine = (f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, device {m['device']}, {report['threads']} "
               f"intra-op thread(s); bf16 in hardware: {_f(m['bf16_native'])}, expected faster than fp32: "
               f"{_f(m['bf16_faster'])}. {m['date']}; 1-min load average {m['load_average_start'][0]:.1f} at start, "
               f"{m.get('load_average_end', [float('nan')])[0]:.1f} at end.")
    lines = ["# atcrl bench", "", machine, "",
             "Rates are best-of-N wall clock (median and CPU-time rates in bench.json).", ""]
    for name, result in sec.items():
        if "error" in result:
            lines += [f"## {name}", "", f"FAILED: `{result['error']}`", ""]
            continue
        lines += [f"## {name}", ""] + globals()[f"_md_{name}"](result) + [""]
    return "\n".join(lines)


def _md_roofline(r: dict[str, Any]) -> list[str]:
    rows = [[p, _f(r[p]["gflops"]), _f(r[p]["gflops_median"]), str(r[p]["n"])] for p in ("fp32", "bf16")]
    return _table(["matmul", "GFLOP/s", "median GFLOP/s", "n"], rows)


def _md_encoder(r: dict[str, Any]) -> list[str]:
    flops = ", ".join(f"{a} {v / 1e6:.1f} MFLOP" for a, v in r["flops_per_image"].items())
    rows = [[row["variant"] + (" (default)" if row["default"] else ""), row["arch"], str(row["batch"]),
             _f(row["per_s"]), _f(row["per_cpu_s"]), _f(row.get("ratio_vs_eager"), ".2f", "x"),
             _f(row.get("gflops"), ".1f"), _pct(row.get("roofline_fraction")), _pct(row.get("bf16_roofline_fraction")),
             _f(row["page_faults_per_call"])] for row in r["rows"]]
    return [f"Forward + backward + Adam of encoder + linear head; training FLOPs per image: {flops}.", ""] + _table(
        ["variant", "encoder", "batch", "images/s", "images/CPU-s", "vs fp32 eager", "GFLOP/s",
         "% own roofline", "% bf16 roofline", "page faults/step"], rows)


def _md_threads(r: dict[str, Any]) -> list[str]:
    rows = []
    for x in r["rows"]:
        base = _find(r["rows"], threads=1, wait_policy="default", spinning_processes=x.get("spinning_processes", 0),
                     batch=x["batch"])
        rows.append([str(x["threads"]), x.get("wait_policy", "default"), str(x.get("spinning_processes", 0)),
                     str(x["batch"]), _f(x["per_s"]), _f(x["per_s_median"]),
                     _f(x["per_s"] / base["per_s"] if base else None, ".2f", "x"), _f(x["load_average"], ".1f")])
    intro = (f"{r['cores']} usable cores; auto would pick {r['auto_threads_now']} thread(s) right now. "
             "Spinning processes: busy loops started by the bench, other jobs on purpose.")
    return [intro, ""] + _table(
        ["threads", "OMP_WAIT_POLICY", "spinning processes", "batch (dmc)", "images/s best", "images/s median",
         "vs 1 thread", "load average"], rows)


def _md_allocator(r: dict[str, Any]) -> list[str]:
    rows = [[x["allocator"], str(x["batch"]), _f(x["page_faults_per_call"]), _f(x["per_s"]),
             _f(x.get("ratio_vs_eager"), ".2f", "x")] for x in r["rows"]]
    return _table(["allocator", "batch (dmc)", "page faults/step", "images/s", "vs glibc defaults"], rows)


def _md_atc(r: dict[str, Any]) -> list[str]:
    rows = [[x["preset"], x["variant"], str(x["batch_size"]), _f(x["timing"]["per_s"], ".2f"),
             _f(x["timing"]["per_cpu_s"], ".2f"), _f(x.get("ratio_vs_eager"), ".2f", "x"), _f(x["sample_ms"], ".1f"),
             _f(x.get("gflops"), ".1f"), _pct(x.get("roofline_fraction"))] for x in r["rows"]]
    return ["ATC pretraining through ATC.loss + ul_step on a replay, sampling included.", ""] + _table(
        ["preset", "variant", "batch", "updates/s", "updates/CPU-s", "vs fp32 eager", "sample ms", "GFLOP/s",
         "% own roofline"], rows)


def _md_accuracy(r: dict[str, Any]) -> list[str]:
    rows = []
    for name, v in r["variants"].items():
        cells = [name]
        for metric in ("accuracy", "probe_r2"):
            x = v.get(metric)
            cells += ["-", "-", "-"] if x is None else [
                f"{x['mean']:.3f} ({', '.join(f'{y:.3f}' for y in x['values'])})", f"{x['diff']:+.3f}",
                f"±{x['tolerance']:.3f} {'ok' if x['within_noise'] else 'OUTSIDE'}"]
        rows.append(cells)
    intro = (f"ATC on {r['train_episodes']} random-policy episodes of {r['spec']}, {r['updates']} updates of batch "
             f"{r['batch_size']}, seeds {r['seeds']}; held-out accuracy and probe R^2 on {r['val_episodes']} "
             f"other episodes. Reference: {r['reference']}.")
    return [intro, ""] + _table(
        ["variant", "accuracy (per seed)", "diff", "tolerance", "probe R^2 (per seed)", "diff", "tolerance"], rows)


def _md_replay(r: dict[str, Any]) -> list[str]:
    rows = [[name, f"{x['frame_shape']} {x['frame_dtype']} stack {x['frame_stack']}",
             f"{x['bytes_per_100k'] / 1e9:.3f} GB", _f(x["transitions_ms"], ".2f"), _f(x["pairs_ms"], ".2f")]
            for name, x in ((n, r[n]) for n in ("pixels", "latents", "latents_uint8") if n in r)]
    return [f"{r['transitions']:,} transitions; pixels take {r['pixel_to_latent_bytes']:.2f}x the latents' memory.",
            ""] + _table(["replay", "slot", "bytes per 100k transitions", f"transitions B={r['batch_size']} ms",
                          f"pairs B={r['batch_size']} ms"], rows)


def _md_envs(r: dict[str, Any]) -> list[str]:
    rows = [[x["spec"], _f(x["fast_render"]), str(x["num_envs"]), _f(x["agent_steps_per_s"]),
             _f(x["env_steps_per_s"]), x["renders"]] for x in r["rows"]]
    return _table(["env", "fast render", "envs", "agent steps/s", "env steps/s", "renders"], rows)


def _md_agents(r: dict[str, Any]) -> list[str]:
    rows = [[x["agent"], x["variant"], str(x.get("batch_size", "-")), _f(x.get("steps_per_s"), ".2f"),
             _f(x.get("ratio_vs_eager"), ".2f", "x"), _f(x.get("ratio_vs_fast"), ".2f", "x"), x.get("error", "")[:120]]
            for x in r["rows"]]
    return [("Agent steps/s once updates run, through the loops' own build_run/train (see atcrl/bench/agents.py); "
             "\"overlap\" rows turn on the loop's overlap option (SAC overlap_env, PPO overlap_ul)."),
            ""] + _table(["agent", "variant", "batch", "agent steps/s", "vs fp32 eager", "vs fast path", "error"], rows)


def _md_scaling(r: dict[str, Any]) -> list[str]:
    roof = r["roofline"]
    intro = (f"Own roofline ({roof['threads']} thread(s), {roof['fp32']['n']}² matmul): fp32 "
             f"{roof['fp32']['gflops']:.0f} GFLOP/s, bf16 {roof['bf16']['gflops']:.0f} GFLOP/s. Each cell: "
             "fp32 eager / fast path. Rates per CPU second show the work itself (one thread) and are steadier than "
             "best wall clock when other processes compete for the cores; roofline % use wall clock. "
             "Plots: scaling_throughput.png, scaling_envs.png, scaling_ddp.png.")
    lines = [intro, ""]
    for part, error in r.get("errors", {}).items():
        lines += [f"FAILED part {part}: `{error}`", ""]

    def pair(rows: list[dict[str, Any]], key: str, fmt: Any = _f, **match: Any) -> str:
        return " / ".join(fmt(x.get(key)) if x else "-" for x in
                          (_find(rows, variant=v, **match) for v in ("fp32 eager", "fast path")))

    encoder, atc = r.get("encoder", []), r.get("atc", [])
    if encoder:
        rows = [[arch, str(b), pair(encoder, "per_s", arch=arch, batch=b), pair(encoder, "per_cpu_s", arch=arch, batch=b),
                 _f((_find(encoder, variant="fast path", arch=arch, batch=b) or {}).get("ratio_vs_eager"), ".2f", "x"),
                 pair(encoder, "gflops", lambda v: _f(v, ".0f"), arch=arch, batch=b),
                 pair(encoder, "fp32_roofline_fraction", _pct, arch=arch, batch=b),
                 pair(encoder, "bf16_roofline_fraction", _pct, arch=arch, batch=b)]
                for arch in dict.fromkeys(x["arch"] for x in encoder)
                for b in sorted({x["batch"] for x in encoder if x["arch"] == arch})]
        lines += ["Encoder training (forward + backward + Adam) vs batch size:", ""] + _table(
            ["encoder", "batch", "images/s", "images/CPU-s", "fast vs eager", "GFLOP/s", "% fp32 roofline",
             "% bf16 roofline"],
            rows) + [""]
    if atc:
        rows = [[str(b), pair(atc, "updates_per_s", lambda v: _f(v, ".2f"), batch=b),
                 pair(atc, "per_cpu_s", lambda v: _f(v, ".2f"), batch=b), pair(atc, "images_per_s", batch=b),
                 _f((_find(atc, variant="fast path", batch=b) or {}).get("ratio_vs_eager"), ".2f", "x"),
                 pair(atc, "fp32_roofline_fraction", _pct, batch=b), pair(atc, "bf16_roofline_fraction", _pct, batch=b)]
                for b in sorted({x["batch"] for x in atc})]
        lines += [("ATC pretraining (DMC preset, ATC.loss + ul_step, sampling included) vs batch size; images/s = "
                   "2 x batch x updates/s (anchors and positives):"), ""] + _table(
            ["batch", "updates/s", "updates/CPU-s", "images/s", "fast vs eager", "% fp32 roofline", "% bf16 roofline"],
            rows) + [""]
    if r.get("envs"):
        rows = [[x["spec"] + (" (fast render)" if x["fast_render"] else ""), str(x["num_envs"]),
                 "vector" if x["vector"] else "single", str(x["env_threads"]), _f(x["agent_steps_per_s"]),
                 _f(x["env_steps_per_s"]), _f(x.get("speedup"), ".2f", "x")] for x in r["envs"]]
        lines += ["Random-action env steps (agent steps x action repeat = env steps):", ""] + _table(
            ["env", "envs", "kind", "env threads", "agent steps/s", "env steps/s", "vs fewest envs"], rows) + [""]
    if r.get("ddp"):
        rows = [[x["variant"], str(x["processes"]), f"{x['global_batch']} ({x['per_process_batch']}/process)",
                 _f(x["updates_per_s"], ".2f"), _f(x["updates_per_s_median"], ".2f"), _f(x["images_per_s"]),
                 _f(x.get("speedup"), ".2f", "x"), _f(x["launch_s"], ".0f"), _f(x.get("cores_used"), ".2f"),
                 _f(x["load_average"], ".1f")]
                for x in r["ddp"]]
        d = r["ddp"][0]
        lines += [(f"Offline ATC pretraining (atcrl pretrain, DMC preset) under torchrun/gloo on "
                   f"{d['data']} {d['image_size']}px episodes recorded by atcrl collect; {d['threads_per_process']} "
                   f"intra-op thread(s) per process; {d['updates']} updates, first log window of {d['log_every']} "
                   "left out:"), ""] + _table(
            ["variant", "processes", "global batch", "updates/s best", "median", "images/s",
             f"vs {r.get('ddp_processes', [1])[0]} process(es)",
             "launch s", "cores used", "load average"], rows)
    return lines
