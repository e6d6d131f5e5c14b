"""Plotly figures for expert utilization: load heatmaps, routing entropy, expert × class routing, dead experts."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from moesweep.report.figures import epoch_ticks, fig_curves, head_color, jitter, n_text, rgba, style
from moesweep.report.info import head_order
from moesweep.report.text import head_name


def _panels(df: pd.DataFrame, best: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(head, config_id, panel title) for each best MoE configuration present in ``df``."""
    lab = dict(zip(best["config_id"], best["label"]))
    ns = dict(zip(best["config_id"], best["n"]))
    out = []
    for head in head_order(df["head"].unique()):
        for cid in df.loc[df["head"] == head, "config_id"].unique():
            out.append((head, cid, f"{head_name(head)}: {lab.get(cid, cid)} (n={ns.get(cid, '?')})"))
    return out


def fig_expert_load(load: pd.DataFrame, best: pd.DataFrame, split: str) -> go.Figure:
    """Heatmap per best MoE configuration: expert (rows) × epoch (columns), load relative to uniform,
    on one shared color scale centred on 1 (blue: under-used, red: over-used)."""
    panels = _panels(load, best)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[2] for p in panels], horizontal_spacing=0.08)
    zmax = max(2.0, float(load["rel_load"].max()))
    for c, (head, cid, _) in enumerate(panels, start=1):
        g = load[load["config_id"] == cid].pivot_table(index="expert", columns="epoch", values="rel_load")
        fig.add_trace(go.Heatmap(z=g.values, x=g.columns + 1, y=g.index, zmin=0, zmax=zmax, zmid=1,
                                 colorscale="RdBu_r", showscale=c == 1,
                                 colorbar={"title": {"text": "load ÷ uniform"}, "len": 0.85},
                                 hovertemplate="epoch %{x}, expert %{y}: %{z:.2f}× uniform<extra></extra>"),
                      row=1, col=c)
        fig.update_xaxes(title_text="epoch", row=1, col=c, **epoch_ticks(load["epoch"]))
        fig.update_yaxes(title_text="expert" if c == 1 else None, dtick=1, autorange="reversed", row=1, col=c)
    return style(fig, f"Per-expert load over epochs ({split} split), relative to uniform",
                 "1 = balanced · 0 = never chosen · mean over seeds of each best configuration", height=430)


def fig_entropy(curves: pd.DataFrame, split: str) -> go.Figure:
    n = n_text(curves.groupby("head", sort=False)["n"].max().astype(int).to_dict())
    return fig_curves(curves, {f"{split}_route_entropy": "normalized routing entropy"},
                      f"Routing entropy over epochs ({split} split, normalized: 1 = uniform over experts)",
                      f"line: mean over seeds of each head's best configuration · band: min–max over seeds · {n}")


def fig_expert_class(share: pd.DataFrame, best: pd.DataFrame) -> go.Figure:
    """Heatmap per best MoE configuration: share of each class (columns) whose top-1 expert is each
    expert (rows); a specialised router shows one bright cell per column."""
    panels = _panels(share, best)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[2] for p in panels], horizontal_spacing=0.08)
    for c, (head, cid, _) in enumerate(panels, start=1):
        g = share[share["config_id"] == cid].pivot_table(index="expert", columns="label", values="share")
        fig.add_trace(go.Heatmap(z=g.values, x=[str(x) for x in g.columns], y=g.index, zmin=0, zmax=1,
                                 colorscale="Blues", showscale=c == 1,
                                 colorbar={"title": {"text": "share"}, "len": 0.85},
                                 hovertemplate="class %{x} → expert %{y}: %{z:.0%}<extra></extra>"), row=1, col=c)
        fig.update_xaxes(title_text="class", type="category", row=1, col=c)
        fig.update_yaxes(title_text="expert (top-1)" if c == 1 else None, dtick=1, autorange="reversed", row=1, col=c)
    return style(fig, "Expert × class routing (validation, last epoch)",
                 "share of each class's samples whose top-1 expert is the row's expert (columns sum to 1) · "
                 "counts summed over seeds", height=430)


def fig_dead(dead: pd.DataFrame) -> go.Figure:
    """Dead experts at the last epoch for every MoE configuration: bar = mean over seeds, dots = seeds."""
    fig = go.Figure()
    configs = dead.drop_duplicates("config_id")[["config_id", "label", "head", "num_experts"]].reset_index(drop=True)
    shown: set[str] = set()
    for i, c in configs.iterrows():
        g = dead[dead["config_id"] == c["config_id"]]
        color = head_color(c["head"])
        fig.add_trace(go.Bar(x=[i], y=[g["dead"].mean()], marker={"color": rgba(color, 0.65)}, width=0.6,
                             name=head_name(c["head"]), legendgroup=c["head"], showlegend=c["head"] not in shown,
                             hovertemplate=f"{c['label']}: mean %{{y:.2f}} of {c['num_experts']:g}<extra></extra>"))
        fig.add_trace(go.Scatter(x=i + jitter(len(g), 0.15, seed=i), y=g["dead"], mode="markers", showlegend=False,
                                 marker={"color": color, "size": 7, "line": {"width": 1, "color": "white"}},
                                 legendgroup=c["head"], customdata=g["seed"],
                                 hovertemplate="seed %{customdata}: %{y:g}<extra></extra>"))
        shown.add(c["head"])
    ticks = [f"{lab}<br>n={(dead['config_id'] == cid).sum()}"
             for lab, cid in zip(configs["label"], configs["config_id"])]
    fig.update_xaxes(tickvals=list(configs.index), ticktext=ticks)
    fig.update_yaxes(title_text="dead experts (count)", rangemode="tozero")
    return style(fig, "Dead experts at the last epoch, per MoE configuration",
                 "bar: mean over seeds · dots: seeds · an expert is dead when it receives no samples", height=430)
