"""Issue 10 item 6, the cost columns of the paper's Tab. 2a and 6: parameters, FLOPs and batch-1
CPU latency of the regression, heatmap and integral models, and the RLE-over-L1 train-step
overhead. ``posereg bench cost`` (and ``full``) runs :func:`measure` after its training runs, on
an otherwise idle bench, and puts the dict in ``results["cost"]``; benchmarks/bench_heads.py and
benchmarks/bench_rle_overhead.py are the same functions with a command line.

Every timing is interleaved: each round runs every variant once (in a rotated order for the
train steps), so machine load hits them alike, and the median over rounds is reported.

FLOPs count 2 per multiply-add (``torch.utils.flop_counter``, fvcore's GFLOPs x 2); the paper's
4.0 / 9.7 GFLOPs for ResNet-50 regression / SimpleBaseline count multiply-adds, so compare the
``GMACs`` column with them. Here SimpleBaseline is 5.43 GMACs: its three 4x4 stride-2
deconvolutions add 1.41 to the backbone's 4.0, each multiply-add once; counting a transposed
convolution per output pixel (stride^2 = 4x more) gives 4.0 + 4 x 1.41 = 9.65, likely the
paper's 9.7 (docs/results.md).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from posereg.bench.experiments import HEADS, MAIN_STEP, R18_STEP, CostSpec, StepModel
from posereg.losses import L1Loss
from posereg.models import create_pose_model

__all__ = [
    "HEADS",
    "MAIN_STEP",
    "R18_STEP",
    "CostSpec",
    "StepModel",
    "gflops",
    "head_costs",
    "interleaved_times",
    "measure",
    "medians",
    "train_step",
    "train_step_overhead",
]


def gflops(model: nn.Module, images: torch.Tensor) -> float:
    """Forward FLOPs (2 per multiply-add) of ``model.predict(images)``, in billions."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.predict(images)
    return counter.get_total_flops() / 1e9


def interleaved_times(
    runners: dict[Any, Callable[[], object]],
    rounds: int,
    iters: int,
    rotate: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[Any, list[float]]:
    """Seconds per call of each runner in each of ``rounds`` (>= 1) rounds of ``iters`` calls,
    every runner once per round (order rotated each round with ``rotate``), after one warm-up
    call each. ``clock``: wall time by default; ``time.process_time`` on a busy machine."""
    if rounds < 1 or iters < 1:
        raise ValueError(f"rounds and iters must be >= 1, got {rounds} and {iters}")
    for fn in runners.values():
        fn()
    keys = list(runners)
    times: dict[Any, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)] if rotate else keys
        for k in order:
            t0 = clock()
            for _ in range(iters):
                runners[k]()
            times[k].append((clock() - t0) / iters)
    return times


def medians(times: dict[Any, list[float]]) -> dict[Any, float]:
    return {k: statistics.median(v) for k, v in times.items()}


def head_costs(spec: CostSpec) -> dict[str, Any]:
    """Parameters, GFLOPs and median batch-1 latency of every backbone x head of ``spec``.

    Each model runs ``TopDownModel.predict`` on one crop (PyTorch eager, decoding included, no
    flip test); with ``spec.onnx`` the regression and heatmap models are exported
    (posereg.export) and timed in ONNX Runtime too. Parameters exclude the training criterion
    (RLE's flow is not part of the deployed model).

    Returns:
        ``{"input_size": [h, w], "threads", "rounds", "rows": [{"backbone", "head", "params_m",
        "gflops", "eager_ms", "onnx_ms" (None unless timed)}]}``.
    """
    torch.manual_seed(0)
    h, w = spec.input_size
    images = torch.randn(1, 3, h, w)
    runners: dict[tuple[str, str, str], Callable[[], object]] = {}
    info: dict[tuple[str, str], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="posereg_cost_") as tmp:
        for backbone in spec.backbones:
            for head in HEADS:
                model = create_pose_model(backbone, head=head, input_size=(h, w)).eval()
                params = sum(
                    p.numel() for name, p in model.named_parameters() if "criterion" not in name
                )
                info[(backbone, head)] = (params / 1e6, gflops(model, images))

                def eager(model: nn.Module = model) -> None:
                    with torch.no_grad():
                        model.predict(images)

                runners[(backbone, "eager", head)] = eager
                if spec.onnx and head in ("regression", "heatmap"):
                    runners[(backbone, "onnx", head)] = _onnx_runner(
                        model, Path(tmp) / f"{backbone}_{head}.onnx", images, spec.threads
                    )
        med = medians(interleaved_times(runners, spec.rounds, spec.iters))
    rows = []
    for backbone in spec.backbones:
        for head in HEADS:
            params_m, gf = info[(backbone, head)]
            onnx_s = med.get((backbone, "onnx", head))
            rows.append({
                "backbone": backbone, "head": head, "params_m": params_m, "gflops": gf,
                "eager_ms": med[(backbone, "eager", head)] * 1e3,
                "onnx_ms": None if onnx_s is None else onnx_s * 1e3,
            })  # fmt: skip
    return {"input_size": [h, w], "threads": spec.threads, "rounds": spec.rounds, "rows": rows}


def _onnx_runner(
    model: nn.Module, path: Path, images: torch.Tensor, threads: int
) -> Callable[[], object]:
    import onnxruntime as ort

    from posereg.export import export_onnx

    export_onnx(model, path, tuple(images.shape[-2:]))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: images.numpy()}
    return lambda: session.run(None, feed)


def train_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
) -> Callable[[], float]:
    """One engine train step as a closure: forward, loss, ``zero_grad``, the finite-loss check,
    backward, optimizer step. Returns the loss."""

    def step() -> float:
        out = model(images)
        loss = criterion(out.mu, out.sigma, target, weight)
        optimizer.zero_grad(set_to_none=True)
        if not bool(torch.isfinite(loss)):
            raise RuntimeError(f"{type(criterion).__name__}: non-finite loss")
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def train_step_overhead(
    step_model: StepModel,
    rounds: int = 7,
    steps: int = 3,
    extra: dict[str, Callable[[nn.Module], nn.Module]] | None = None,
    unlabelled: float = 0.0,
    optimizer_options: dict[str, Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Median seconds per train step of one model with the L1 loss and with RLE (user defaults:
    official convention, Laplace Q, RealNVP 6 x 64), interleaved round by round.

    Arguments:
        extra: more criteria to time on the same model: name -> a function of the model's RLE
            criterion that returns one with the same call signature, e.g. an earlier commit's
            RLE loss with the same flow parameters (benchmarks/bench_rle_overhead.py).
        unlabelled: the fraction of keypoints with weight 0 (0: the worst case for RLE).
        optimizer_options: extra ``torch.optim.Adam`` options for every variant (``foreach``,
            ``fused``); None: torch's CPU default.
        clock: see :func:`interleaved_times`.

    Returns:
        ``{"model": label, "median": {name: s/step}, "rounds": {name: [s/step per round]},
        "criteria": {name: criterion}, "batch": (model, images, target, weight)}``; names are
        ``l1``, ``rle`` and those of ``extra``. Targets are random (0.1 x N(0, 1)).
    """
    torch.manual_seed(0)
    m = step_model
    model = create_pose_model(m.backbone, width=m.width, loss="rle", input_size=m.input_size)
    h, w = m.input_size
    images = torch.randn(m.batch, 3, h, w)
    k = 17  # create_pose_model's default: COCO's keypoints
    target = 0.1 * torch.randn(m.batch, k, 2)
    weight = (torch.rand(m.batch, k, 1) >= unlabelled).float()
    weight = weight.expand(-1, -1, 2).contiguous()
    rle = model.criterion
    assert rle is not None
    criteria: dict[str, nn.Module] = {"l1": L1Loss(), "rle": rle}
    criteria |= {name: make(rle) for name, make in (extra or {}).items()}
    body = [p for n, p in model.named_parameters() if "criterion." not in n]
    runners = {}
    for name, criterion in criteria.items():
        params = body + list(criterion.parameters())
        optimizer = torch.optim.Adam(params, lr=1e-5, **(optimizer_options or {}))
        runners[name] = train_step(model, criterion, optimizer, images, target, weight)
    times = interleaved_times(runners, rounds, steps, rotate=True, clock=clock)
    return {
        "model": m.label,
        "median": medians(times),
        "rounds": times,
        "criteria": criteria,
        "batch": (model, images, target, weight),
    }


def measure(spec: CostSpec) -> dict[str, Any]:
    """Everything of item 6 for ``spec``, with ``spec.threads`` torch threads (restored after).

    Returns:
        ``{"spec": spec.to_dict(), "heads": head_costs(spec), "rle_overhead": {"threads",
        "rounds", "rows": [{"model", "l1_s_per_step", "rle_s_per_step", "overhead",
        "overhead_range"}]}}``: the overhead is rle / l1 - 1 within each round (the two ran
        back to back, so machine drift cancels), its median and [min, max] over the rounds;
        ``results["cost"]`` of ``posereg bench`` (docs/bench.md).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        heads = head_costs(spec)
        rows = []
        for m in spec.step_models:
            step = train_step_overhead(m, spec.rounds, spec.iters)
            med, t = step["median"], step["rounds"]
            per_round = [rle / l1 - 1 for rle, l1 in zip(t["rle"], t["l1"], strict=True)]
            rows.append({
                "model": m.label, "l1_s_per_step": med["l1"], "rle_s_per_step": med["rle"],
                "overhead": statistics.median(per_round),
                "overhead_range": [min(per_round), max(per_round)],
            })  # fmt: skip
    finally:
        torch.set_num_threads(before)
    overhead = {"threads": spec.threads, "rounds": spec.rounds, "rows": rows}
    return {"spec": spec.to_dict(), "heads": heads, "rle_overhead": overhead}
