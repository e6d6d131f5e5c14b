"""Plotly figures for the post-training analyses: sharpness, spectral density, loss surface and latency."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from moesweep.report.figures import SPLIT_COLORS, head_color, jitter, log_ticks, nice_log_ticks, rgba, style
from moesweep.report.info import head_order
from moesweep.report.text import head_name, isnum

SPLIT_OFFSET = {"train": -0.2, "test": 0.2}


def split_order(splits) -> list[str]:
    """train before val before test, unknown splits after."""
    rank = {"train": 0, "val": 1, "test": 2}
    return sorted(map(str, splits), key=lambda s: (rank.get(s, 3), s))


def fig_sharpness(raw: pd.DataFrame, info: pd.DataFrame, param_set: str, loss: str) -> go.Figure:
    """λmax and trace per head (x) and split (color): seed dots with the estimator's own error bar
    (eigen-residual / Hutchinson stderr), diamond = mean with 95% CI over seeds."""
    raw = raw[(raw["param_set"] == param_set) & (raw["loss"] == loss)]
    info = info[(info["param_set"] == param_set) & (info["loss"] == loss)]
    heads = head_order(raw["head"].unique())
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Top Hessian eigenvalue λmax", "Hessian trace"))
    shown: set[str] = set()
    for col, (val, err, stat) in enumerate((("lambda_max", "lambda_max_residual", "lambda"),
                                            ("trace", "trace_stderr", "trace")), start=1):
        for i, head in enumerate(heads):
            for split in split_order(raw.loc[raw["head"] == head, "split"].unique()):
                color = SPLIT_COLORS.get(split, head_color(head))
                x0 = i + SPLIT_OFFSET.get(split, 0.0)
                pts = raw[(raw["head"] == head) & (raw["split"] == split)]
                fig.add_trace(go.Scatter(x=x0 - 0.06 + jitter(len(pts), 0.04, seed=i), y=pts[val], mode="markers",
                                         error_y={"type": "data", "array": pts[err].fillna(0), "thickness": 1,
                                                  "width": 3, "color": rgba(color, 0.7)},
                                         marker={"size": 7, "color": rgba(color, 0.6)}, legendgroup=split,
                                         showlegend=False, customdata=pts["seed"],
                                         hovertemplate="seed %{customdata}: %{y:.4g}<extra></extra>"), row=1, col=col)
                s = info[(info["head"] == head) & (info["split"] == split)]
                if s.empty:
                    continue
                s = s.iloc[0]
                m, lo, hi = s[f"{stat}_mean"], s[f"{stat}_lo"], s[f"{stat}_hi"]
                err_y = ({"type": "data", "array": [hi - m], "arrayminus": [m - lo], "thickness": 2, "width": 8,
                          "color": color} if isnum(lo) else None)
                fig.add_trace(go.Scatter(x=[x0 + 0.08], y=[m], error_y=err_y, mode="markers", name=f"{split} split",
                                         marker={"symbol": "diamond", "size": 12, "color": color},
                                         legendgroup=split, showlegend=split not in shown,
                                         hovertemplate=f"{head_name(head)} {split}: mean %{{y:.4g}} (n={s['n']})"
                                                       "<extra></extra>"), row=1, col=col)
                shown.add(split)
        n = {h: int(info.loc[info["head"] == h, "n"].max()) if (info["head"] == h).any() else 0 for h in heads}
        fig.update_xaxes(tickvals=list(range(len(heads))), ticktext=[f"{head_name(h)} (n={n[h]})" for h in heads],
                         range=[-0.6, len(heads) - 0.4], row=1, col=col)
    fig.update_yaxes(title_text="λmax (loss curvature)", row=1, col=1)
    fig.update_yaxes(title_text="trace (sum of eigenvalues)", row=1, col=2)
    return style(fig, f"Sharpness of each head's best configuration (parameters: {param_set}, loss: {loss})",
                 "small dots: seeds, bar = estimator error (λ: eigen-residual ‖Hv−λv‖, trace: Hutchinson std. "
                 "error) · diamond: mean ± 95% CI over seeds", height=460)


def fig_spectrum(lines: pd.DataFrame) -> go.Figure:
    """Hessian spectral density (stochastic Lanczos quadrature), one line per trial, one panel per split."""
    splits = split_order(lines["split"].unique())
    fig = make_subplots(rows=1, cols=len(splits), subplot_titles=[f"{s} split" for s in splits],
                        horizontal_spacing=0.08)
    shown: set[str] = set()
    for c, split in enumerate(splits, start=1):
        for head in head_order(lines["head"].unique()):
            sub = lines[(lines["split"] == split) & (lines["head"] == head)]
            n = sub["trial_id"].nunique()
            for tid, g in sub.groupby("trial_id", sort=True):
                fig.add_trace(go.Scatter(x=g["x"], y=g["density"].clip(lower=1e-8), mode="lines",
                                         line={"color": rgba(head_color(head), 0.75), "width": 1.5},
                                         name=f"{head_name(head)} (n={n})", legendgroup=head,
                                         showlegend=head not in shown,
                                         hovertemplate=f"{tid}: λ=%{{x:.3g}}, density %{{y:.2e}}<extra></extra>"),
                              row=1, col=c)
                shown.add(head)
        fig.update_xaxes(title_text="eigenvalue λ", row=1, col=c)
        fig.update_yaxes(type="log", title_text="density" if c == 1 else None, exponentformat="power", dtick=1,
                         row=1, col=c)
    return style(fig, "Hessian eigenvalue density per trial (log scale)",
                 "one line per seed of each head's best configuration", height=430)


def _band_panels(info: pd.DataFrame, y: str, lo: str, hi: str, heads: list[str], scale: float = 1.0) -> go.Figure:
    """A grid of panels, rows = splits and columns = direction kinds: mean line and min–max band per head."""
    splits, kinds = split_order(info["split"].unique()), sorted(info["direction_kind"].unique())
    fig = make_subplots(rows=len(splits), cols=len(kinds), horizontal_spacing=0.08, vertical_spacing=0.14,
                        subplot_titles=[f"{k} directions, {s} split" for s in splits for k in kinds])
    shown: set[str] = set()
    for r, split in enumerate(splits, start=1):
        for c, kind in enumerate(kinds, start=1):
            for head in heads:
                g = info[(info["split"] == split) & (info["direction_kind"] == kind) & (info["head"] == head)]
                g = g.dropna(subset=[y]).sort_values("alpha")
                if g.empty:
                    continue
                color = head_color(head)
                fig.add_trace(go.Scatter(x=np.r_[g["alpha"], g["alpha"][::-1]], y=scale * np.r_[g[hi], g[lo][::-1]],
                                         fill="toself", mode="lines", fillcolor=rgba(color, 0.16), line={"width": 0},
                                         hoverinfo="skip", legendgroup=head, showlegend=False), row=r, col=c)
                fig.add_trace(go.Scatter(x=g["alpha"], y=scale * g[y], mode="lines", line={"color": color, "width": 2},
                                         name=f"{head_name(head)} (n={int(g['n'].max())} curves)", legendgroup=head,
                                         showlegend=head not in shown,
                                         hovertemplate="α=%{x:.2f}: %{y:.4g}<extra></extra>"), row=r, col=c)
                shown.add(head)
            if r == len(splits):
                fig.update_xaxes(title_text="step α along the direction", row=r, col=c)
    fig.update_layout(height=170 + 290 * len(splits))
    return fig


def fig_landscape(info: pd.DataFrame) -> go.Figure:
    fig = _band_panels(info, "loss_mean", "loss_lo", "loss_hi", head_order(info["head"].unique()))
    fig.update_yaxes(title_text="loss", col=1)
    return style(fig, "Loss along eigenvector and random directions through each head's best configuration",
                 "line: mean over seeds × directions · band: min–max · α = 0 is the trained weights",
                 height=fig.layout.height)


def fig_flip_rate(info: pd.DataFrame) -> go.Figure:
    moe = info.dropna(subset=["flip_mean"])
    fig = _band_panels(moe, "flip_mean", "flip_lo", "flip_hi", head_order(moe["head"].unique()), scale=100.0)
    fig.update_yaxes(title_text="routing flips (% of samples)", col=1)
    fig.update_yaxes(rangemode="tozero")
    return style(fig, "Routing flip rate along the same directions (%)",
                 "share of samples whose top-1 expert changes from α = 0 · line: mean · band: min–max over "
                 "seeds × directions", height=fig.layout.height)


def fig_latency(lat: pd.DataFrame) -> go.Figure:
    """Latency (median with p10–p90 whiskers, log-log) and throughput against batch size per series."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Latency per batch (median, p10–p90)", "Throughput"))
    multi = lat[["device", "scope", "threads"]].drop_duplicates().shape[0] > 1
    dashes = {"batched": "solid", "naive": "dot"}
    for key, g in lat.groupby(["series", "device", "scope", "threads"], sort=False):
        series, device, scope, threads = key
        g = g.sort_values("batch_size")
        head = g["head"].iloc[0]
        name = f"{series} ({device}, {scope}, {threads:g} thr)" if multi else str(series)
        name += f" n={int(g['n'].max())}"
        line = {"color": head_color(head), "width": 2, "dash": dashes.get(g["dispatch"].iloc[0], "solid")}
        err = {"type": "data", "array": g["p90_ms"] - g["median_ms"], "arrayminus": g["median_ms"] - g["p10_ms"],
               "thickness": 1}
        fig.add_trace(go.Scatter(x=g["batch_size"], y=g["median_ms"], error_y=err, mode="lines+markers", line=line,
                                 name=name, legendgroup=name, hovertemplate="batch %{x}: %{y:.3g} ms<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=g["batch_size"], y=g["images_per_s"], mode="lines+markers", line=line, name=name,
                                 legendgroup=name, showlegend=False,
                                 hovertemplate="batch %{x}: %{y:.3s} images/s<extra></extra>"), row=1, col=2)
    fig.update_xaxes(type="log", title_text="batch size (images)", **log_ticks(lat["batch_size"]))
    fig.update_yaxes(type="log", title_text="latency (ms)", row=1, col=1,
                     **nice_log_ticks(pd.concat([lat["p10_ms"], lat["p90_ms"], lat["median_ms"]])))
    fig.update_yaxes(type="log", title_text="throughput (images/s)", row=1, col=2,
                     **nice_log_ticks(lat["images_per_s"]))
    devices = ", ".join(sorted(map(str, lat["device"].unique())))
    return style(fig, "Inference latency and throughput against batch size (log-log)",
                 f"median over trials of each statistic · devices: {devices}", height=470)


def fig_flops(lat: pd.DataFrame) -> go.Figure:
    """Measured time per image against active FLOPs at each series' largest timed batch size."""
    top = lat.sort_values("batch_size").groupby(["series", "device", "scope", "threads"], sort=False).tail(1)
    fig = go.Figure()
    for _, r in top.iterrows():
        us = r["median_ms"] / r["batch_size"] * 1000  # ms per batch -> µs per image
        fig.add_trace(go.Scatter(x=[r["active_flops"]], y=[us], mode="markers+text", cliponaxis=False,
                                 text=[str(r["series"])], textposition="top center",
                                 marker={"size": 13, "color": head_color(r["head"]),
                                         "symbol": "circle" if r["dispatch"] != "naive" else "circle-open"},
                                 name=f"{r['series']} (batch {int(r['batch_size'])}, n={int(r['n'])})",
                                 showlegend=False,
                                 hovertemplate="%{x:.3s} FLOPs: %{y:.3g} µs/image<extra></extra>"))
    lx = np.log10(top["active_flops"].clip(lower=1e-12))
    fig.update_xaxes(type="log", title_text="active FLOPs per sample (as recorded)",
                     range=[lx.min() - 0.12, lx.max() + 0.12],  # room for the point labels at both ends
                     **nice_log_ticks(top["active_flops"]))
    us_all = top["median_ms"] / top["batch_size"] * 1000
    ly = np.log10(us_all.clip(lower=1e-12))
    fig.update_yaxes(type="log", title_text="time per image (µs)", range=[ly.min() - 0.08, ly.max() + 0.12],
                     **nice_log_ticks(us_all))
    sizes = ", ".join(sorted({f"{int(b)}" for b in top["batch_size"]}))
    return style(fig, "Measured time against active FLOPs",
                 f"each series at its largest timed batch size ({sizes}) · median over n={int(top['n'].max())} "
                 "trials · "
                 "equal FLOPs but different time = dispatch overhead",
                 height=430)


def fig_speedup(speed: pd.DataFrame) -> go.Figure:
    """SoftMoE time ÷ SparseMoE time per batch size and sparse dispatch (> 1: sparse is faster)."""
    fig = go.Figure()
    dashes = {"batched": "solid", "naive": "dot"}
    for (dispatch, device, scope), g in speed.groupby(["dispatch", "device", "scope"]):
        g = g.sort_values("batch_size")
        fig.add_trace(go.Scatter(x=g["batch_size"], y=g["speedup"], mode="lines+markers",
                                 line={"color": head_color("sparse"), "dash": dashes.get(dispatch, "dash")},
                                 name=f"SparseMoE {dispatch} dispatch ({device}, {scope})",
                                 hovertemplate="batch %{x}: %{y:.2f}×<extra></extra>"))
    fig.add_hline(y=1, line={"color": "#999", "dash": "dash"})
    fig.update_xaxes(type="log", title_text="batch size (images)", **log_ticks(speed["batch_size"]))
    fig.update_yaxes(title_text="speedup (soft time ÷ sparse time)", rangemode="tozero")
    return style(fig, "SparseMoE speedup over SoftMoE (soft time ÷ sparse time)",
                 f"above the dashed line the sparse head is faster · median over n={int(speed['n'].max())} trials "
                 "per point", height=400)
