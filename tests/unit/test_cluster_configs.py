"""The cluster/ deployment files: the keys Ray's autoscaler and KubeRay expect, token auth on every
Ray process, moesweep installed, and a local.sh that is valid bash and never stops Ray globally."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


@pytest.fixture(scope="module")
def aws() -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / "aws.yaml").read_text())


@pytest.fixture(scope="module")
def kuberay() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()) if d is not None]


def _ray_cluster(docs: list[dict[str, Any]]) -> dict[str, Any]:
    clusters = [d for d in docs if d.get("kind") == "RayCluster"]
    assert len(clusters) == 1
    return clusters[0]


# ---- AWS (Ray autoscaler) -------------------------------------------------------------------------

def test_aws_matches_ray_autoscaler_schema(aws: dict[str, Any]) -> None:
    """The installed Ray's own JSON schema rejects unknown keys, so a typo fails here, not at `ray up`."""
    jsonschema = pytest.importorskip("jsonschema")
    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ray is not installed")
    schema_path = Path(list(spec.submodule_search_locations)[0]) / "autoscaler" / "ray-schema.json"
    jsonschema.validate(aws, json.loads(schema_path.read_text()))


def test_aws_node_types(aws: dict[str, Any]) -> None:
    assert aws["cluster_name"]
    assert aws["provider"]["type"] == "aws" and aws["provider"]["region"]
    types = aws["available_node_types"]
    assert aws["head_node_type"] in types
    head = types[aws["head_node_type"]]
    assert not head.get("resources", {}).get("GPU")

    gpu_workers = {name: t for name, t in types.items()
                   if name != aws["head_node_type"] and t.get("resources", {}).get("GPU", 0) >= 1}
    assert gpu_workers, "no worker type with GPU resources"
    for t in gpu_workers.values():
        assert t["min_workers"] == 0  # scale to zero: no idle GPU bills between sweeps
        assert 1 <= t["max_workers"] <= aws["max_workers"]
        assert t["node_config"]["InstanceType"].startswith(("g", "p"))
    assert aws["idle_timeout_minutes"] > 0


def test_aws_installs_moesweep_and_enables_token_auth(aws: dict[str, Any]) -> None:
    setup = " ".join(aws["setup_commands"])
    assert re.search(r"pip install\b.*moesweep", setup)
    assert "~/moesweep" in aws["file_mounts"]  # the repository the pip install points at
    # Token: one file shared by all nodes (file_mounts) plus RAY_AUTH_MODE on every start command.
    assert any(remote.endswith(".ray/auth_token") for remote in aws["file_mounts"])
    assert "RAY_AUTH_MODE=token" in setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in aws[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key


# ---- KubeRay --------------------------------------------------------------------------------------

def _containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_template["spec"]["containers"]


def test_kuberay_head_and_gpu_workers(kuberay: list[dict[str, Any]]) -> None:
    rc = _ray_cluster(kuberay)
    assert rc["apiVersion"] == "ray.io/v1"
    spec = rc["spec"]
    assert spec["rayVersion"].startswith("2.60")
    head = spec["headGroupSpec"]
    assert _containers(head["template"])[0]["image"]
    # KubeRay's rayStartParams is map[string]string: a bare YAML number would be rejected.
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())

    groups = spec["workerGroupSpecs"]
    assert groups
    for g in groups:
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert all(isinstance(v, str) for v in g["rayStartParams"].values())
        limits = _containers(g["template"])[0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1


def test_kuberay_token_auth_on_every_ray_process(kuberay: list[dict[str, Any]]) -> None:
    spec = _ray_cluster(kuberay)["spec"]
    env_lists = [c.get("env", []) for c in _containers(spec["headGroupSpec"]["template"])]
    env_lists += [c.get("env", []) for g in spec["workerGroupSpecs"] for c in _containers(g["template"])]
    if spec.get("enableInTreeAutoscaling"):
        env_lists.append(spec["autoscalerOptions"]["env"])
    secrets = set()
    for env in env_lists:
        by_name = {e["name"]: e for e in env}
        assert by_name["RAY_AUTH_MODE"]["value"] == "token"
        ref = by_name["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        secrets.add((ref["name"], ref["key"]))
    assert len(secrets) == 1  # one token for the whole cluster


def test_kuberay_shared_volume_is_read_write_many(kuberay: list[dict[str, Any]]) -> None:
    claims = {d["metadata"]["name"]: d for d in kuberay if d.get("kind") == "PersistentVolumeClaim"}
    spec = _ray_cluster(kuberay)["spec"]
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for tpl in templates:
        used = [v["persistentVolumeClaim"]["claimName"] for v in tpl["spec"].get("volumes", [])
                if "persistentVolumeClaim" in v]
        assert used, "every pod mounts the shared volume (checkpoints must be reachable by all nodes)"
        for name in used:
            assert "ReadWriteMany" in claims[name]["spec"]["accessModes"]


# ---- local.sh -------------------------------------------------------------------------------------

def test_local_sh_is_valid_bash_and_strict() -> None:
    script = CLUSTER / "local.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "set -euo pipefail" in text
    code_lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    # `ray stop` kills every Ray process of the user; the script must stop only what it started.
    assert not [ln for ln in code_lines if re.search(r"\bray\b.*\bstop\b", ln) or "RAY_BIN\" stop" in ln]
    assert "RAY_AUTH_MODE=token" in text


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_local_sh_passes_shellcheck() -> None:
    proc = subprocess.run(["shellcheck", str(CLUSTER / "local.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_local_sh_usage_and_empty_stop(tmp_path: Path) -> None:
    """Without Ray: an unknown command prints usage (exit 2); stop/status with no PID file are no-ops."""
    env = {**os.environ, "MOESWEEP_RAY_DIR": str(tmp_path / "state"), "MOESWEEP_RAY": "/nonexistent/ray"}
    script = str(CLUSTER / "local.sh")
    bad = subprocess.run(["bash", script, "bogus"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "worker HEAD:PORT" in bad.stdout
    for cmd in ("stop", "status"):
        proc = subprocess.run(["bash", script, cmd], env=env, capture_output=True, text=True)
        assert proc.returncode == 0 and "no nodes recorded" in proc.stdout
    missing = subprocess.run(["bash", script, "worker", "10.0.0.1:6379"], capture_output=True, text=True,
                             env={**env, "MOESWEEP_RAY_TOKEN_FILE": str(tmp_path / "none")})
    assert missing.returncode != 0 and "no token" in missing.stderr
