"""Inference latency and FLOPs of a classifier: the head alone and end to end.

For each scope (``head``: random features [B, D]; ``end_to_end``: random images [B, C, H, W]), each
batch size and, for sparse heads, each dispatch (``batched`` and ``naive``; the head's own setting is
restored afterwards), the forward pass is warmed up and then repeated until its median is stable (or a
time budget / repeat cap is reached). CPU calls are timed with ``time.perf_counter`` at a fixed torch
thread count (restored afterwards); CUDA calls with CUDA events and synchronisation. FLOPs are counted
by ``torch.utils.flop_counter.FlopCounterMode`` (what actually runs, padding included), and the
analytic active FLOPs are 2 * head.active_macs() * B, plus the backbone's counted FLOPs end to end.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

DEFAULT_BATCH_SIZES = (1, 8, 32, 128, 512, 1024)
SCOPES = ("head", "end_to_end")


@dataclass(frozen=True)
class Timing:
    """When to stop repeating: after ``min_repeats`` calls, in chunks of ``min_repeats``, once the
    median moved by less than ``rtol`` over the last chunk, or at ``max_repeats`` / ``budget_s``."""

    warmup: int = 3
    min_repeats: int = 10
    max_repeats: int = 200
    budget_s: float = 2.0  # per measured point (scope, dispatch, batch size)
    rtol: float = 0.02


def device_name(device: torch.device) -> str:
    """Human-readable device: the GPU's name, or the CPU's processor/architecture string."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count (None: leave it) and restore it on exit; yields the count used."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _time_once(fn: Callable[[], Any], device: torch.device) -> float:
    """Milliseconds of one call; on CUDA between events recorded on the current stream."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def time_call(fn: Callable[[], Any], device: torch.device, timing: Timing = Timing()) -> list[float]:
    """Per-call times in ms after warm-up, repeated until the median is stable (see ``Timing``)."""
    for _ in range(timing.warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times: list[float] = []
    t_end = time.perf_counter() + timing.budget_s
    prev = None
    while len(times) < timing.max_repeats:
        times += [_time_once(fn, device) for _ in range(min(timing.min_repeats, timing.max_repeats - len(times)))]
        med = float(torch.tensor(times).median())
        if (prev is not None and abs(med - prev) <= timing.rtol * prev) or time.perf_counter() > t_end:
            break
        prev = med
    return times


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call as counted by FlopCounterMode (matmuls and convolutions; 2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@contextlib.contextmanager
def _dispatch(head: nn.Module, value: str | None) -> Iterator[None]:
    """Temporarily set ``head.dispatch`` (no-op for None); the original is restored even on error."""
    if value is None:
        yield
        return
    before = head.dispatch
    head.dispatch = value
    try:
        yield
    finally:
        head.dispatch = before


def measure_latency(model: nn.Module, image_shape: Sequence[int] | None = None,
                    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, device: str | torch.device = "cpu",
                    threads: int | None = 1, scopes: Sequence[str] = SCOPES, timing: Timing = Timing(),
                    head_name: str | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Latency records of ``model`` (already on ``device``), in eval mode and without autograd.

    Args:
        image_shape: (C, H, W) of the images; needed for the ``end_to_end`` scope.
        threads: torch intra-op threads while timing (None: leave torch's setting).
        head_name: label for the ``head`` column (default: the head's class name).

    Returns:
        One dict per (scope, dispatch, batch size) with head, dispatch (None for heads without one),
        device, device_type, threads, torch_version, scope, batch_size, median_ms, p10_ms, p90_ms,
        images_per_s, flops, active_flops, n_repeats.
    """
    device = torch.device(device)
    param = next(model.parameters())
    if param.device.type != device.type:
        raise ValueError(f"model is on {param.device}, not {device}: move it first (model.to(device))")
    unknown = set(scopes) - set(SCOPES)
    if unknown or ("end_to_end" in scopes and image_shape is None):
        raise ValueError(f"scopes: expected a subset of {SCOPES} (end_to_end needs image_shape), got {scopes}")
    head, backbone = model.head, model.backbone
    dispatches = ("batched", "naive") if hasattr(head, "dispatch") else (None,)
    gen = torch.Generator().manual_seed(seed)

    def inputs(scope: str, b: int) -> Tensor:
        shape = (b, backbone.out_dim) if scope == "head" else (b, *image_shape)
        return torch.randn(shape, generator=gen).to(dtype=param.dtype, device=device)

    records = []
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch_threads(threads) as n_threads, torch.inference_mode():
            for scope in scopes:
                net = head if scope == "head" else model
                for b in batch_sizes:
                    x = inputs(scope, b)
                    backbone_flops = count_flops(lambda: backbone(x)) if scope == "end_to_end" else 0
                    for disp in dispatches:
                        with _dispatch(head, disp):
                            times = torch.tensor(time_call(lambda: net(x), device, timing), dtype=torch.float64)
                            flops = count_flops(lambda: net(x))
                        p10, med, p90 = times.quantile(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
                        records.append({
                            "head": head_name or type(head).__name__, "dispatch": disp,
                            "device": device_name(device), "device_type": device.type, "threads": n_threads,
                            "torch_version": torch.__version__, "scope": scope, "batch_size": b,
                            "median_ms": med, "p10_ms": p10, "p90_ms": p90, "images_per_s": b / (med / 1e3),
                            "flops": flops, "active_flops": 2 * head.active_macs() * b + backbone_flops,
                            "n_repeats": len(times)})
    finally:
        for m, training in modes:
            m.training = training
    return records
