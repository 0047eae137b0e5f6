"""RLE train-step cost: RLE vs L1 on the same model, and today's RLE step vs an earlier commit's.

    python benchmarks/bench_rle_overhead.py [--threads 1] [--rounds 7] [--steps 3]
        [--models main r18] [--baseline-ref 14edfdf] [--unlabelled 0.0] [--clock wall]

Issue 9, section 5 (two bullets). One train step is what the engine does per batch: forward,
loss, ``zero_grad``, the finite-loss check, backward, Adam step (float32, contiguous: the
defaults). Variants, all in one process and interleaved (each round runs ``--steps`` steps of
every variant, in a rotated order), so that machine load hits them alike:

- ``l1``: the model with the L1 loss (``create_pose_model(loss="l1")``'s step);
- ``rle``: the model with the RLE loss of this checkout (user defaults: official convention,
  Laplace Q, RealNVP 6 x 64);
- ``rle@REF``: the same model with ``posereg/flows.py`` and ``posereg/losses.py`` as of
  ``--baseline-ref`` (read with ``git show``), the flow's parameters copied from ``rle``'s.

Models: ``main`` is the main job's (configs/synth_rle.yaml: half-width ResNet-18, 64x48,
batch 64), ``r18`` a ResNet-18 at 256x192, batch 32. The flow sees B x K = 1088 and 544
points. Targets are random; ``--unlabelled`` sets that fraction of keypoints to weight 0
(real data has some; 0 is the worst case for the RLE step).

Reported: the median seconds per step of each variant, the overhead rle / l1 - 1, and the
ratio rle / rle@REF, as a Markdown table; the RLE loss alone (forward + backward on the
B x K points, interleaved too: the part of the step the two implementations differ in, and
much less noisy); and the loss of both RLE implementations on the same batch (they must
agree within float32 rounding). ``--threads`` defaults to 1 (the ratio
of a single-threaded flow to a single-threaded backbone; the main job trains with 2). On a
busy machine use ``--clock cpu`` (process CPU time: other processes' load does not count,
but with 2+ threads it also counts the threads' spin-waits).
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from posereg.losses import L1Loss
from posereg.models import create_pose_model

ROOT = Path(__file__).resolve().parents[1]

#: name -> (backbone, width, (h, w), batch)
MODELS = {
    "main": ("resnet18", 0.5, (64, 48), 64),
    "r18": ("resnet18", 1.0, (256, 192), 32),
}


def load_baseline(ref: str) -> types.ModuleType:
    """posereg.losses as of git ``ref``, using posereg.flows of the same ref (not this checkout's)."""

    def source(path: str) -> str:
        try:
            return subprocess.run(
                ["git", "show", f"{ref}:{path}"],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        except subprocess.CalledProcessError as e:
            sys.exit(f"cannot read {path} at {ref!r} with git show: {e.stderr.strip()}")

    flows = types.ModuleType(f"posereg_flows_at_{ref}")
    exec(
        compile(source("src/posereg/flows.py"), f"{ref}:src/posereg/flows.py", "exec"),
        flows.__dict__,
    )
    import_line = "from posereg.flows import RealNVP"
    losses_src = source("src/posereg/losses.py")
    if import_line not in losses_src:
        sys.exit(f"{ref}:src/posereg/losses.py has no line {import_line!r}; cannot pin its flow")
    losses = types.ModuleType(f"posereg_losses_at_{ref}")
    losses.__dict__["RealNVP"] = flows.RealNVP
    code = losses_src.replace(import_line, "RealNVP = RealNVP  # pinned to the same ref")
    exec(compile(code, f"{ref}:src/posereg/losses.py", "exec"), losses.__dict__)
    return losses


@dataclass
class Variant:
    name: str
    criterion: nn.Module
    optimizer: torch.optim.Optimizer


def make_step(
    model: nn.Module,
    variant: Variant,
    images: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
) -> Callable[[], float]:
    def step() -> float:
        out = model(images)
        loss = variant.criterion(out.mu, out.sigma, target, weight)
        variant.optimizer.zero_grad(set_to_none=True)
        if not bool(torch.isfinite(loss)):
            raise RuntimeError(f"{variant.name}: non-finite loss")
        loss.backward()
        variant.optimizer.step()
        return float(loss.detach())

    return step


#: Adam implementations: torch's CPU default (a per-tensor loop), foreach, fused.
ADAM: dict[str, dict[str, bool]] = {
    "default": {},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


def bench_model(name: str, args: argparse.Namespace, baseline: types.ModuleType | None) -> dict:
    """Time one model's variants; without ``baseline`` only ``l1`` and ``rle``."""
    backbone, width, (h, w), batch = MODELS[name]
    torch.manual_seed(0)
    model = create_pose_model(backbone, width=width, loss="rle")
    images = torch.randn(batch, 3, h, w)
    target = 0.1 * torch.randn(batch, 17, 2)
    weight = (torch.rand(batch, 17, 1) >= args.unlabelled).float().expand(-1, -1, 2).contiguous()
    rle = model.criterion
    old = None
    if baseline is not None:
        old = baseline.RLELoss(dim=2)
        old.flow.load_state_dict(rle.flow.state_dict())  # same parameters, same layout
    body = [p for n, p in model.named_parameters() if "criterion." not in n]

    def variant(vname: str, criterion: nn.Module) -> Variant:
        params = body + list(criterion.parameters())
        return Variant(vname, criterion, torch.optim.Adam(params, lr=1e-5, **ADAM[args.adam]))

    variants = [variant("l1", L1Loss()), variant("rle", rle)]
    if old is not None:
        variants.append(variant(f"rle@{args.baseline_ref}", old))

    # parity on one batch (no optimizer step): the two RLE implementations, same parameters
    with torch.no_grad():
        out = model(images)
        loss_new = float(rle(out.mu, out.sigma, target, weight))
        loss_old = float(old(out.mu, out.sigma, target, weight)) if old is not None else math.nan

    steps = {v.name: make_step(model, v, images, target, weight) for v in variants}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for fn in steps.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    names = list(steps)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for vname in order:
            t0 = clock()
            for _ in range(args.steps):
                steps[vname]()
            times[vname].append((clock() - t0) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}

    # the loss alone (forward + backward on the B x K points, no backbone): less noisy
    mu = out.mu.detach().requires_grad_()
    sigma = out.sigma.detach().requires_grad_()
    loss_only = {
        v.name: (lambda c=v.criterion: c(mu, sigma, target, weight).backward())
        for v in variants[1:]
    }
    loss_times: dict[str, list[float]] = {k: [] for k in loss_only}
    for r in range(args.rounds):
        for vname in names[1:] if r % 2 == 0 else names[:0:-1]:
            t0 = clock()
            for _ in range(10 * args.steps):
                loss_only[vname]()
            loss_times[vname].append((clock() - t0) / (10 * args.steps))
    return {
        "loss_only": {k: statistics.median(v) for k, v in loss_times.items()},
        "model": f"{backbone} x{width} {h}x{w} b{batch}",
        "median": med,
        "spread": {k: (min(v), max(v)) for k, v in times.items()},
        "loss": (loss_new, loss_old),
        "names": names,
    }


def measure(
    models: tuple[str, ...] | list[str] = ("main",),
    threads: int = 1,
    rounds: int = 7,
    steps: int = 3,
    unlabelled: float = 0.0,
    clock: str = "wall",
    adam: str = "default",
) -> dict:
    """The RLE-over-L1 train-step overhead of each model (no baseline commit), as a dict.

    Returns:
        ``{"threads", "rounds", "rows": [{"model", "l1_s_per_step", "rle_s_per_step",
        "overhead"}]}`` (overhead = rle / l1 - 1): ``results["cost"]["rle_overhead"]`` of
        ``posereg bench`` (docs/bench.md).
    """
    torch.set_num_threads(threads)
    args = argparse.Namespace(
        rounds=rounds, steps=steps, unlabelled=unlabelled, clock=clock, adam=adam,
        baseline_ref=None,
    )  # fmt: skip
    rows = []
    for m in models:
        result = bench_model(m, args, None)
        med = result["median"]
        rows.append(
            {
                "model": result["model"],
                "l1_s_per_step": med["l1"],
                "rle_s_per_step": med["rle"],
                "overhead": med["rle"] / med["l1"] - 1,
            }
        )
    return {"threads": threads, "rounds": rounds, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    p.add_argument("--baseline-ref", default="14edfdf", help="git ref of 'today's step'")
    p.add_argument("--unlabelled", type=float, default=0.0, help="fraction of weight-0 keypoints")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument(
        "--adam", choices=list(ADAM), default="default", help="Adam implementation (all variants)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    baseline = load_baseline(args.baseline_ref)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), clock {args.clock}, "
        f"{args.rounds} rounds x {args.steps} steps, unlabelled {args.unlabelled:.0%}, "
        f"baseline {args.baseline_ref}\n"
    )
    results = [bench_model(m, args, baseline) for m in args.models]
    ref = f"rle@{args.baseline_ref}"
    print(f"| model | l1 s/step | rle s/step | {ref} s/step | rle/l1 - 1 | rle/{ref} |")
    print("|---|---|---|---|---|---|")
    for r in results:
        m = r["median"]
        print(
            f"| {r['model']} | {m['l1']:.4f} | {m['rle']:.4f} | {m[ref]:.4f} | "
            f"{m['rle'] / m['l1'] - 1:+.1%} | {m['rle'] / m[ref]:.3f} |"
        )
    print(f"\n| model | RLE loss fwd+bwd ms | {ref} ms | ratio |")
    print("|---|---|---|---|")
    for r in results:
        lo = r["loss_only"]
        print(
            f"| {r['model']} | {lo['rle'] * 1e3:.2f} | {lo[ref] * 1e3:.2f} | {lo['rle'] / lo[ref]:.3f} |"
        )
    print()
    for r in results:
        new, old = r["loss"]
        spread = ", ".join(f"{k} {lo:.4f}-{hi:.4f}" for k, (lo, hi) in r["spread"].items())
        print(f"{r['model']}: loss rle {new:.7f} vs {ref} {old:.7f} (diff {new - old:+.2e}); "
              f"min-max s/step: {spread}")  # fmt: skip


if __name__ == "__main__":
    main()
