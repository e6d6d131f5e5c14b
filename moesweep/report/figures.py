"""Plotly figures for accuracy, hyperparameter effects and learning curves, drawn from the info frames.

Shared look: one color per head everywhere, white template, each title states what is plotted, its
units and the seed counts (n=…), with a smaller second line for how to read it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from moesweep.report.info import HPARAM_NAMES, head_order
from moesweep.report.text import head_name, isnum

HEAD_COLORS = {"dense": "#5f6b7a", "soft": "#2f6fbd", "sparse": "#e0701b"}
PALETTE = ["#2a9d8f", "#8e5fb8", "#c9483b", "#b8912a", "#4b8b3b"]
SPLIT_COLORS = {"train": "#7b9acc", "test": "#d1495b", "val": "#66a182"}
_AXIS = {"gridcolor": "#e9edf3", "zerolinecolor": "#d5dbe5", "linecolor": "#b9c2cf", "showline": True,
         "ticks": "outside", "tickcolor": "#b9c2cf", "automargin": True}
# A small template of our own: "plotly_white" is deep-copied into every figure and costs ~50x more.
TEMPLATE = go.layout.Template(layout={"paper_bgcolor": "white", "plot_bgcolor": "white", "xaxis": _AXIS,
                                      "yaxis": _AXIS, "colorway": list(HEAD_COLORS.values()) + PALETTE,
                                      "font": {"family": "system-ui, 'DejaVu Sans', sans-serif", "color": "#1d2433"}})


def head_color(head: str) -> str:
    if head in HEAD_COLORS:
        return HEAD_COLORS[head]
    return PALETTE[sum(map(ord, str(head))) % len(PALETTE)]  # stable across runs, unlike hash()


def rgba(color: str, alpha: float) -> str:
    c = color.lstrip("#")
    r, g, b = (int(c[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def n_text(counts: dict[str, int]) -> str:
    """'n=3 seeds per head' when all equal, else 'n=3/3/2 seeds (dense/soft/sparse)'."""
    vals = list(counts.values())
    if not vals:
        return "n=0"
    if len(set(vals)) == 1:
        return f"n={vals[0]} seed{'s' if vals[0] != 1 else ''} per head"
    return f"n={'/'.join(map(str, vals))} seeds ({'/'.join(counts)})"


def style(fig: go.Figure, title: str, subtitle: str = "", height: int = 420) -> go.Figure:
    text = f"<b>{title}</b>" + (f"<br><span style='font-size:12px;color:#5b6577'>{subtitle}</span>" if subtitle else "")
    # Title anchored to the top of the container in pixels, so short figures do not clip it.
    title = {"text": text, "x": 0.01, "xanchor": "left", "y": 1, "yref": "container", "yanchor": "top",
             "pad": {"t": 20}}
    fig.update_layout(template=TEMPLATE, height=height, title=title,
                      margin={"l": 70, "r": 30, "t": 100, "b": 95}, font={"size": 12},
                      # Legend pinned to the figure's bottom edge, below any x-axis title, at every height.
                      legend={"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0},
                      hoverlabel={"namelength": -1})
    return fig


def epoch_ticks(epochs: pd.Series) -> dict:
    """Whole-number epoch ticks: every epoch for short runs, plotly's automatic spacing otherwise."""
    return {"dtick": 1} if len(epochs) and epochs.max() < 12 else {"tickformat": "d"}


def log_ticks(values: pd.Series) -> dict:
    """Ticks at the values themselves (batch sizes) on a log axis, instead of cluttered minor digits."""
    v = sorted({float(x) for x in values.dropna()})
    return {"tickvals": v, "ticktext": [f"{x:g}" for x in v]} if 0 < len(v) <= 12 else {}


def nice_log_ticks(values: pd.Series | np.ndarray) -> dict:
    """1-2-5 ticks (finer when the data span less than a decade) for a log axis over ``values``."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return {}
    lo, hi = v.min() / 1.15, v.max() * 1.15
    for mant in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8)):
        ticks = [m * 10.0**k for k in range(int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1)
                 for m in mant if lo <= m * 10.0**k <= hi]
        if len(ticks) >= 4:
            break
    return {"tickvals": ticks, "ticktext": [_si(t) for t in ticks]}


def _si(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:g}{suffix}"
    return f"{x:g}"


def jitter(n: int, width: float = 0.12, seed: int = 0) -> np.ndarray:
    """Deterministic horizontal offsets so seed dots do not sit on each other."""
    return np.random.default_rng(seed).uniform(-width, width, n) if n > 1 else np.zeros(n)


def add_mean_ci(fig: go.Figure, x: float, mean: float, lo: float, hi: float, color: str, name: str, row: int,
                col: int, scale: float = 100.0, showlegend: bool = False, hover: str = "") -> None:
    """A diamond at the mean with 95% CI whiskers (none when the CI is n/a)."""
    err = None
    if isnum(lo) and isnum(hi):
        err = {"type": "data", "array": [scale * (hi - mean)], "arrayminus": [scale * (mean - lo)],
               "thickness": 2, "width": 10, "color": color}
    fig.add_trace(go.Scatter(x=[x], y=[scale * mean], mode="markers", error_y=err, name=name, legendgroup=name,
                             showlegend=showlegend, marker={"symbol": "diamond", "size": 13, "color": color,
                                                            "line": {"width": 1, "color": "white"}},
                             hovertemplate=f"{hover}mean %{{y:.2f}}<extra></extra>"), row=row, col=col)


def fig_accuracy(best: pd.DataFrame, points: pd.DataFrame) -> go.Figure:
    """Validation (best epoch) and test accuracy of each head's best configuration: seeds as dots,
    mean ± 95% CI as a diamond with whiskers."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Validation accuracy (best epoch)", "Test accuracy"),
                        horizontal_spacing=0.09)
    heads = list(best["head"])
    for col, (prefix, metric) in enumerate((("val", "best_val_acc"), ("test", "test_acc")), start=1):
        for i, (_, b) in enumerate(best.iterrows()):
            color = head_color(b["head"])
            pts = points[points["config_id"] == b["config_id"]]
            fig.add_trace(go.Scatter(x=i + jitter(len(pts), seed=i), y=100 * pts[metric], mode="markers",
                                     marker={"size": 8, "color": rgba(color, 0.55)}, showlegend=False,
                                     customdata=pts["seed"], name=head_name(b["head"]),
                                     hovertemplate="seed %{customdata}: %{y:.2f}%<extra></extra>"), row=1, col=col)
            add_mean_ci(fig, i + 0.28, b[f"{prefix}_mean"], b[f"{prefix}_lo"], b[f"{prefix}_hi"], color,
                        head_name(b["head"]), 1, col, hover=f"{b['label']}<br>")
        fig.update_xaxes(tickvals=list(range(len(heads))), row=1, col=col, range=[-0.6, len(heads) - 0.3],
                         ticktext=[f"{head_name(h)}<br><sub>{lab} · n={n}</sub>"
                                   for h, lab, n in zip(heads, best["label"], best["n"])])
        fig.update_yaxes(title_text="accuracy (%)", row=1, col=col)
    return style(fig, "Accuracy of the best configuration per head (%)",
                 f"dots: seeds · diamond and whiskers: mean and 95% t-interval · "
                 f"{n_text(dict(zip(best['head'], best['n'])))}", height=460)


def fig_difference(cmp: pd.DataFrame) -> go.Figure:
    """Each MoE head minus dense (percentage points) with the bootstrap 95% CI; zero = no difference."""
    fig = go.Figure()
    for i, (_, r) in enumerate(cmp.iterrows()):
        color = head_color(r["head"])
        err = None
        if isnum(r["lo"]):
            err = {"type": "data", "array": [100 * (r["hi"] - r["diff"])], "arrayminus": [100 * (r["diff"] - r["lo"])],
                   "thickness": 2, "width": 10, "color": color}
        p = f"p={r['p']:.3f}" if isnum(r["p"]) else "p n/a"
        fig.add_trace(go.Scatter(x=[100 * r["diff"]], y=[f"{head_name(r['head'])} − dense"], error_x=err,
                                 mode="markers+text", text=[f"{p}, n={r['n']} vs {r['n_base']}"],
                                 textposition="top center", marker={"symbol": "diamond", "size": 13, "color": color},
                                 showlegend=False, hovertemplate="%{x:+.2f} points<extra></extra>"))
    fig.add_vline(x=0, line={"color": "#999", "dash": "dash"})
    fig.update_xaxes(title_text="difference in test accuracy (percentage points)", zeroline=False)
    fig.update_yaxes(range=[len(cmp) - 0.4, -0.7])  # reversed (first head on top), room for the p labels
    return style(fig, "Test accuracy: each MoE head's best configuration minus dense's best",
                 "diamond: difference of means · whiskers: percentile-bootstrap 95% CI · p: Welch's t-test",
                 height=170 + 70 * max(len(cmp), 1))


def fig_parallel(trials_done: pd.DataFrame) -> go.Figure:
    """Parallel coordinates, one line per completed trial: head, E, k, w -> validation and test accuracy.
    Hyperparameters a head does not have (dense E and k, soft k) sit at 0, labelled n/a."""
    heads = head_order(trials_done["head"].unique())
    idx = {h: i for i, h in enumerate(heads)}
    dims = [{"label": "head", "values": trials_done["head"].map(idx), "tickvals": list(range(len(heads))),
             "ticktext": [head_name(h) for h in heads]}]
    for col in ("num_experts", "top_k", "balance_weight"):
        vals = trials_done[col].astype(float)
        ticks = sorted(vals.dropna().unique())
        dims.append({"label": HPARAM_NAMES[col], "values": vals.fillna(-1 if col != "balance_weight" else 0).tolist(),
                     "tickvals": ([-1] if vals.isna().any() and col != "balance_weight" else []) + ticks,
                     "ticktext": (["n/a"] if vals.isna().any() and col != "balance_weight" else [])
                     + [f"{t:g}" for t in ticks]})
    for col, label in (("best_val_acc", "val acc (%)"), ("test_acc", "test acc (%)")):
        dims.append({"label": label, "values": (100 * trials_done[col]).tolist()})
    fig = go.Figure(go.Parcoords(dimensions=dims, line={"color": 100 * trials_done["test_acc"], "colorscale": "Viridis",
                                                        "showscale": True, "colorbar": {"title": "test %"}},
                                 labelfont={"size": 12}, tickfont={"size": 11}))
    fig = style(fig, "Hyperparameters → accuracy, one line per completed trial",
                f"color: test accuracy (%) · drag along an axis to filter · n={len(trials_done)} trials", height=440)
    fig.update_layout(margin={"l": 70, "r": 40, "t": 110, "b": 40})
    return fig


def fig_hparams(points: pd.DataFrame, effects: pd.DataFrame, dense: pd.Series | None) -> go.Figure:
    """Test accuracy against each hyperparameter (rows) for each MoE head (columns): trials as dots,
    mean ± 95% CI over all trials sharing the value; dense best as a dashed reference line."""
    heads = head_order(points["head"].unique())
    params = [p for p in HPARAM_NAMES if p in set(points["param"])]
    fig = make_subplots(rows=len(params), cols=len(heads), vertical_spacing=0.1, horizontal_spacing=0.07,
                        subplot_titles=[f"{head_name(h)}: {HPARAM_NAMES[p]}" for p in params for h in heads])
    for r, param in enumerate(params, start=1):
        for c, head in enumerate(heads, start=1):
            color = head_color(head)
            pts = points[(points["head"] == head) & (points["param"] == param)]
            eff = effects[(effects["head"] == head) & (effects["param"] == param)]
            values = sorted(pts["value"].unique())
            pos = {v: i for i, v in enumerate(values)}
            if pts.empty:  # e.g. the soft head has no top-k: say so rather than draw an empty panel
                # Paper coordinates from the panel's domain: plotly.js resolves "x3 domain" refs of a panel
                # without traces to the first panel's axes.
                sp = fig.get_subplot(r, c)
                fig.add_annotation(text=f"{head_name(head)} has no {HPARAM_NAMES[param]}", showarrow=False,
                                   x=sum(sp.xaxis.domain) / 2, y=sum(sp.yaxis.domain) / 2, xref="paper",
                                   yref="paper", xanchor="center", yanchor="middle",
                                   font={"color": "#5b6577", "size": 13})
                blank = {"showticklabels": False, "showgrid": False, "showline": False, "ticks": "", "zeroline": False}
                fig.update_xaxes(row=r, col=c, **blank)
                fig.update_yaxes(row=r, col=c, **blank)
                continue
            x = pts["value"].map(pos).to_numpy(float) + jitter(len(pts), 0.1, seed=r * 10 + c)
            fig.add_trace(go.Scatter(x=x, y=100 * pts["test_acc"], mode="markers", showlegend=False,
                                     marker={"size": 6, "color": rgba(color, 0.45)},
                                     hovertemplate="%{y:.2f}%<extra></extra>"), row=r, col=c)
            for _, e in eff.iterrows():
                add_mean_ci(fig, pos[e["value"]] + 0.25, e["mean"], e["lo"], e["hi"], color, head_name(head), r, c,
                            hover=f"{HPARAM_NAMES[param]}={e['value']:g}, n={e['n']}<br>")
            if dense is not None and isnum(dense["test_mean"]):
                fig.add_hline(y=100 * dense["test_mean"], row=r, col=c,
                              line={"color": head_color("dense"), "dash": "dash", "width": 1})
            fig.update_xaxes(tickvals=list(range(len(values))), ticktext=[f"{v:g}" for v in values],
                             range=[-0.5, len(values) - 0.3], row=r, col=c)
            if c == 1:
                fig.update_yaxes(title_text="test acc (%)", row=r, col=c)
    n = int(points.drop_duplicates(["config_id", "seed"]).shape[0])
    ref = " · dashed: dense best mean" if dense is not None else ""
    return style(fig, "Test accuracy (%) against each hyperparameter, by head",
                 f"dots: trials · diamond: mean ± 95% CI over all trials with that value (others pooled){ref} · "
                 f"n={n} MoE trials", height=150 + 230 * len(params))


def fig_curves(curves: pd.DataFrame, metrics: dict[str, str], title: str, subtitle: str) -> go.Figure:
    """Per-epoch mean (line) with a min–max band over seeds, one color per head; one panel per metric
    (``metrics``: metric -> axis title; accuracy metrics, named *_acc, are shown in %)."""
    present = [m for m in metrics if m in set(curves["metric"])]
    fig = make_subplots(rows=1, cols=len(present), horizontal_spacing=0.09,
                        subplot_titles=[metrics[m] for m in present])
    shown: set[str] = set()
    for c, metric in enumerate(present, start=1):
        scale = 100.0 if metric.endswith("_acc") else 1.0
        for head in head_order(curves["head"].unique()):
            g = curves[(curves["head"] == head) & (curves["metric"] == metric)].sort_values("epoch")
            if g.empty:
                continue
            color, ep = head_color(head), g["epoch"] + 1  # epochs are stored 0-based, shown 1-based
            fig.add_trace(go.Scatter(x=np.r_[ep, ep[::-1]], y=scale * np.r_[g["hi"], g["lo"][::-1]], fill="toself",
                                     mode="lines", fillcolor=rgba(color, 0.18), line={"width": 0}, hoverinfo="skip",
                                     legendgroup=head, showlegend=False), row=1, col=c)
            fig.add_trace(go.Scatter(x=ep, y=scale * g["mean"], mode="lines+markers", line={"color": color, "width": 2},
                                     marker={"size": 5}, name=f"{head_name(head)} (n={int(g['n'].max())})",
                                     legendgroup=head, showlegend=head not in shown,
                                     hovertemplate="epoch %{x}: %{y:.3f}<extra></extra>"), row=1, col=c)
            shown.add(head)
        fig.update_xaxes(title_text="epoch", row=1, col=c, **epoch_ticks(curves["epoch"]))
        fig.update_yaxes(title_text=metrics[metric], row=1, col=c)
    return style(fig, title, subtitle, height=440)
