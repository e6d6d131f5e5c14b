"""The report's sections, in reading order: each turns the loaded results into a ``Section`` of text, tables
and figures, and says in the page (never by failing) when its tables are missing or empty."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from moesweep.report import analysis_info as ai
from moesweep.report import figures as fg
from moesweep.report import figures_analysis as fa
from moesweep.report import figures_moe as fm
from moesweep.report import info
from moesweep.report.page import Fig, Section, bullets, code, kv_table, note, para, table
from moesweep.report.text import (comparison_sentences, findings, fmt_duration, fmt_interval, fmt_mean_ci, fmt_num,
                                  fmt_p, fmt_sig, head_name, verdict)

ANALYZE_HINT = "run `moesweep analyze RESULTS_DIR` to produce it"


def missing(what: str, table_name: str, why: str = "the analysis was not run or every task failed",
            hint: str = ANALYZE_HINT) -> str:
    return note(f"No {what}: {table_name}.parquet is missing or empty ({why}); {hint}.", "missing")


SWEEP_LOGGED = "the sweep writes it from the MoE trials' per-epoch routing statistics"


def overview(R: info.Results) -> Section:
    m, trials = R.manifest, R["trials"]
    counts = info.status_counts(trials)
    status = ", ".join(f"{n} {s}" for s, n in zip(counts["status"], counts["n"])) or "none"
    cluster = m.get("cluster") or {}
    versions = m.get("versions") or {}
    pairs: list[tuple[str, Any]] = [
        ("sweep", m.get("name") or (trials["sweep"].iloc[0] if len(trials) else R.dir.name)),
        ("trials", f"{len(trials)} ({status})"),
        ("wall time", fmt_duration(info.wall_time_s(m))),
        ("training time, all trials", fmt_duration(trials["wall_s"].sum(min_count=1) if len(trials) else None)),
        ("cluster", f"{cluster.get('nodes', 'n/a')} nodes, {cluster.get('cpus', 'n/a')} CPUs, "
                    f"{cluster.get('gpus', 'n/a')} GPUs" if cluster else "n/a"),
        ("started / ended", f"{m.get('start_time', 'n/a')} / {m.get('end_time', 'n/a')}"),
        ("git commit", m.get("git_sha", "n/a")),
        ("versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
         if isinstance(versions, dict) and versions else "n/a"),
    ]
    if len(trials):
        data = ", ".join(sorted(set(trials["dataset"].dropna().astype(str)) | set()))
        backbone = ", ".join(sorted(set(trials["backbone"].dropna().astype(str))))
        pairs.insert(2, ("data / backbone", f"{data or 'n/a'} / {backbone or 'n/a'}"))
    blocks = [kv_table(pairs)]
    if not m:
        blocks.append(note("manifest.json is missing: sweep metadata (command, versions, cluster) unknown.", "missing"))
    if m.get("command"):
        blocks += ["<h3>Command</h3>", code(str(m["command"]))]
    sel = m.get("selection")
    if sel:
        rule = sel.get("rule", "") if isinstance(sel, dict) else str(sel)
        ids = sel.get("trial_ids", []) if isinstance(sel, dict) else []
        blocks.append(para(f"Analysis selection: {rule or 'n/a'} ({len(ids)} trials: {', '.join(map(str, ids))})."))
    failed = trials[~trials["status"].astype(str).str.lower().isin(info.DONE)] if len(trials) else trials
    if len(failed):
        blocks += ["<h3>Trials that did not complete</h3>",
                   table(failed, {"trial_id": "trial", "head": "head", "config_id": "config", "seed": "seed",
                                  "status": "status", "epochs_done": "epochs", "error": "error"},
                         {"error": lambda e: "" if pd.isna(e) else str(e)[:160]})]
    if m.get("space"):
        blocks.append(f"<details><summary>Resolved search space</summary>"
                      f"{code(json.dumps(m['space'], indent=2, sort_keys=True, default=str))}</details>")
    return Section("overview", "Overview", blocks)


def _acc(prefix: str):
    return lambda r: fmt_mean_ci(r[f"{prefix}_mean"], r[f"{prefix}_lo"], r[f"{prefix}_hi"])


def _config_table(df: pd.DataFrame, caption: str) -> str:
    rows = df.assign(val=df.apply(_acc("val"), axis=1), test=df.apply(_acc("test"), axis=1),
                     head_name=df["head"].map(head_name))
    return table(rows, {"head_name": "head", "label": "configuration", "config_id": "config id", "n": "seeds",
                        "val": "val acc (mean ± 95% CI)", "val_std": "val std", "test": "test acc (mean ± 95% CI)",
                        "test_std": "test std"},
                 dict.fromkeys(("val_std", "test_std"), lambda v: fmt_num(100 * v, 2) + " pts" if pd.notna(v)
                               else "n/a"),
                 caption)


def accuracy(R: info.Results, best: pd.DataFrame, cmp: pd.DataFrame) -> Section:
    s = Section("accuracy", "Accuracy by head")
    if best.empty:
        s.blocks.append(note("No completed trials: nothing to compare yet.", "missing"))
        return s
    points = info.seed_points(R["trials"], best["config_id"])
    s.blocks += [Fig("accuracy", fg.fig_accuracy(best, points)),
                 _config_table(best, "Best configuration per head: highest mean best-epoch validation accuracy over "
                                     "seeds (ties: more seeds, then lower std).")]
    if (best["n"] < 2).any():
        s.blocks.append(note("A best configuration has a single completed seed: its interval is n/a.", "missing"))
    if "dense" not in set(best["head"]):
        s.blocks.append(note("No completed dense trial: there is no baseline to compare the MoE heads with.",
                             "missing"))
    elif not cmp.empty:
        rows = cmp.assign(head_name=cmp["head"].map(head_name), diff_pts=cmp["diff"] * 100,
                          ci=cmp.apply(lambda r: fmt_interval(r["lo"], r["hi"]), axis=1),
                          verdict=cmp["significant"].map(verdict))
        s.blocks += ["<h3>Against the dense baseline (test accuracy)</h3>",
                     Fig("difference", fg.fig_difference(cmp)),
                     table(rows, {"head_name": "head", "label": "configuration", "n": "seeds", "n_base": "dense seeds",
                                  "diff_pts": "difference (pts)", "ci": "bootstrap 95% CI", "p": "Welch p",
                                  "verdict": "verdict"},
                           {"diff_pts": lambda v: fmt_num(v, 2, signed=True), "p": fmt_p}),
                     bullets(comparison_sentences(cmp, best)),
                     para("With a handful of seeds the percentile bootstrap interval is somewhat too narrow; "
                          "the verdict uses Welch's t-test at 0.05.")]
    all_cfg = info.config_stats(R["trials"])
    s.blocks.append(f"<details><summary>All {len(all_cfg)} configurations</summary>"
                    f"{_config_table(all_cfg, 'Every configuration with at least one completed seed.')}</details>")
    return s


def hyperparameters(R: info.Results, best: pd.DataFrame) -> Section:
    s = Section("hyperparameters", "Hyperparameter effects")
    done = info.completed(R["trials"])
    if len(done) < 2:
        s.blocks.append(note("Fewer than two completed trials: no hyperparameter effects to show.", "missing"))
        return s
    s.blocks.append(Fig("parallel", fg.fig_parallel(done)))
    pts = info.hparam_points(R["trials"])
    if pts.empty:
        s.blocks.append(note("No completed MoE trials: no expert count, top-k or balance weight to vary.", "missing"))
        return s
    dense = best[best["head"] == "dense"].iloc[0] if (best["head"] == "dense").any() else None
    s.blocks.append(Fig("hparams", fg.fig_hparams(pts, info.hparam_effects(R["trials"]), dense)))
    return s


def learning_curves(R: info.Results, best: pd.DataFrame) -> Section:
    s = Section("learning-curves", "Learning curves")
    curves = info.epoch_curves(R["epochs"], best, ("val_acc", "val_loss", "train_loss"))
    if curves.empty:
        s.blocks.append(note("No per-epoch metrics (epochs.parquet missing or empty).", "missing"))
        return s
    n = fg.n_text(dict(zip(best["head"], best["n"])))
    s.blocks.append(Fig("curves", fg.fig_curves(
        curves, {"val_acc": "validation accuracy (%)", "val_loss": "validation loss", "train_loss": "training loss"},
        "Learning curves of each head's best configuration",
        f"line: mean over seeds · band: min–max over seeds · {n}")))
    return s


def utilization(R: info.Results, best: pd.DataFrame) -> Section:
    s = Section("utilization", "Expert utilization")
    moe_best = best[best["head"] != "dense"]
    if moe_best.empty:
        s.blocks.append(note("No completed MoE trials: no routing to show.", "missing"))
        return s
    split = "val" if "val" in set(R["experts"]["split"]) else "train"
    load = ai.expert_load(R["experts"], moe_best, split)
    s.blocks.append(Fig("expert-load", fm.fig_expert_load(load, moe_best, split)) if not load.empty else
                    missing("per-expert load", "experts", "not logged for the best configurations", SWEEP_LOGGED))
    ent_split = "val" if R["epochs"]["val_route_entropy"].notna().any() else "train"
    ent = info.epoch_curves(R["epochs"], moe_best, (f"{ent_split}_route_entropy",))
    s.blocks.append(Fig("entropy", fm.fig_entropy(ent, ent_split)) if not ent.empty else
                    note("No routing entropy in epochs.parquet.", "missing"))
    share = ai.expert_class_share(R["expert_class"], moe_best)
    s.blocks.append(Fig("expert-class", fm.fig_expert_class(share, moe_best)) if not share.empty else
                    missing("expert × class routing", "expert_class", "not logged", SWEEP_LOGGED))
    dead = ai.dead_experts(R["epochs"], R["trials"])
    s.blocks.append(Fig("dead-experts", fm.fig_dead(dead)) if not dead.empty else
                    note("No dead-expert counts in epochs.parquet.", "missing"))
    return s


def sharpness(R: info.Results) -> Section:
    s = Section("sharpness", "Sharpness")
    raw = R["sharpness"]
    if raw.empty:
        s.blocks.append(missing("sharpness results", "sharpness"))
        return s
    sinfo = ai.sharpness_info(raw)
    for i, ((ps, loss), _) in enumerate(sinfo.groupby(["param_set", "loss"], sort=True)):
        s.blocks.append(Fig(f"sharpness-{i}", fa.fig_sharpness(raw, sinfo, ps, loss)))
    rows = sinfo.assign(head_name=sinfo["head"].map(head_name),
                        lam=sinfo.apply(lambda r: fmt_mean_ci(r["lambda_mean"], r["lambda_lo"], r["lambda_hi"],
                                                              1, "", 2), axis=1),
                        tr=sinfo.apply(lambda r: fmt_mean_ci(r["trace_mean"], r["trace_lo"], r["trace_hi"],
                                                             1, "", 1), axis=1))
    s.blocks.append(table(rows, {"head_name": "head", "split": "split", "param_set": "parameters", "loss": "loss",
                                 "n": "seeds", "lam": "λmax (mean ± 95% CI)", "lambda_resid": "median residual",
                                 "tr": "trace (mean ± 95% CI)", "trace_stderr": "median trace stderr"},
                          {"lambda_resid": fmt_sig(2), "trace_stderr": fmt_sig(3)}))
    lines = ai.spectrum_lines(R["spectrum"])
    s.blocks.append(Fig("spectrum", fa.fig_spectrum(lines)) if not lines.empty else
                    missing("spectral densities", "spectrum"))
    return s


def landscape(R: info.Results) -> Section:
    s = Section("landscape", "Loss surface")
    linfo = ai.landscape_info(R["landscape"])
    if linfo.empty:
        s.blocks.append(missing("loss-surface curves", "landscape"))
        return s
    s.blocks.append(Fig("landscape", fa.fig_landscape(linfo)))
    s.blocks.append(Fig("flip-rate", fa.fig_flip_rate(linfo)) if linfo["flip_mean"].notna().any() else
                    note("No routing flip rates (no MoE head in the landscape table).", "missing"))
    checks = ai.landscape_checks_info(R["landscape_checks"])
    if not checks.empty:
        s.blocks.append(table(checks.assign(head_name=checks["head"].map(head_name)),
                              {"head_name": "head", "split": "split", "check": "check", "n": "seeds",
                               "measured": "measured", "predicted": "predicted", "ratio": "measured ÷ predicted"},
                              dict.fromkeys(("measured", "predicted", "ratio"), fmt_sig(4)),
                              "Consistency checks: curvature of the eigenvector curve vs λmax, random curves vs "
                              "trace."))
    return s


def latency(R: info.Results) -> Section:
    s = Section("latency", "Latency")
    lat = ai.latency_info(R["latency"])
    if lat.empty:
        s.blocks.append(missing("latency measurements", "latency"))
        return s
    s.blocks.append(Fig("latency", fa.fig_latency(lat)))
    if lat["active_flops"].notna().any():
        s.blocks.append(Fig("flops", fa.fig_flops(lat.dropna(subset=["active_flops"]))))
    speed = ai.sparse_speedup(R["latency"])
    if speed.empty:
        s.blocks.append(note("No sparse-over-soft speedup: both heads must be timed on the same device and scope.",
                             "missing"))
    else:
        s.blocks += [Fig("speedup", fa.fig_speedup(speed)),
                     table(speed, {"dispatch": "sparse dispatch", "device": "device", "scope": "scope",
                                   "batch_size": "batch", "soft_ms": "soft (ms)", "sparse_ms": "sparse (ms)",
                                   "speedup": "speedup"},
                           {"soft_ms": fmt_sig(3), "sparse_ms": fmt_sig(3), "speedup": lambda v: f"{v:.2f}×"})]
    return s


def findings_section(R: info.Results, best: pd.DataFrame, cmp: pd.DataFrame) -> Section:
    lines = findings(R["trials"], best, cmp, ai.sharpness_info(R["sharpness"]),
                     ai.sparse_speedup(R["latency"]), ai.dead_experts(R["epochs"], R["trials"]))
    return Section("findings", "Findings", [bullets(lines, "findings")])


def all_sections(R: info.Results) -> list[Section]:
    best = info.best_configs(R["trials"])
    cmp = info.compare_to_baseline(R["trials"])
    return [overview(R), accuracy(R, best, cmp), hyperparameters(R, best), learning_curves(R, best),
            utilization(R, best), sharpness(R), landscape(R), latency(R), findings_section(R, best, cmp)]

