"""``moesweep status RESULTS_DIR``: what is done, running, failed, and the command to resume."""

from __future__ import annotations

from pathlib import Path

from moesweep.results import read_json, read_table


def status_counts(results_dir: Path) -> dict[str, int]:
    trials = read_table(results_dir, "trials")
    return {str(k): int(v) for k, v in trials["status"].value_counts().items()} if len(trials) else {}


def print_status(results_dir: Path) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    manifest = read_json(results_dir / "manifest.json") or {}
    plan = manifest.get("plan", {})
    counts = status_counts(results_dir)
    planned = plan.get("trials")
    seen = sum(counts.values())
    if planned and planned > seen:
        counts["not started"] = planned - seen
    table = Table(title=f"{manifest.get('name', results_dir.name)}: {manifest.get('status', 'unknown')}")
    table.add_column("status")
    table.add_column("trials", justify="right")
    for k, v in sorted(counts.items()):
        table.add_row(k, str(v))
    console.print(table)
    trials = read_table(results_dir, "trials")
    failed = trials[trials["status"].isin(["failed", "error"])] if len(trials) else trials
    for _, r in failed.iterrows():
        console.print(f"[red]{r['status']}[/] {r['trial_id']} ({r['head']}): {r['error']}")
    unfinished = sum(counts.get(k, 0) for k in ("running", "pending", "interrupted", "not started"))
    if manifest.get("resume_command") and (unfinished or manifest.get("status") in ("running", "interrupted")):
        console.print(f"resume with: {manifest['resume_command']}")
    tasks = read_table(results_dir, "tasks")
    if len(tasks):
        tc = tasks["status"].value_counts().to_dict()
        console.print("analysis tasks: " + ", ".join(f"{v} {k}" for k, v in sorted(tc.items())))
    return 0
