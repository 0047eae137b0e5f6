"""RLE train-step cost: RLE vs L1 on the same model, and today's RLE step vs an earlier commit's.

    python benchmarks/bench_rle_overhead.py [--threads 1] [--rounds 7] [--steps 3]
        [--models main r18] [--baseline-ref 14edfdf] [--unlabelled 0.0] [--clock wall]

Issue 9, section 5 (two bullets); ``posereg.bench.cost.train_step_overhead`` with one more
variant. One train step is what the engine does per batch: forward,
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
import importlib.util
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

from posereg.bench.cost import MAIN_STEP, R18_STEP, interleaved_times, medians, train_step_overhead

ROOT = Path(__file__).resolve().parents[1]

MODELS = {m.name: m for m in (MAIN_STEP, R18_STEP)}

#: Adam implementations: torch's CPU default (a per-tensor loop), foreach, fused.
ADAM: dict[str, dict[str, bool]] = {
    "default": {},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


def load_baseline(ref: str) -> types.ModuleType:
    """posereg.losses as of git ``ref``, using posereg.flows of the same ref (not this checkout's).

    Both files are written by ``git show`` into a temporary folder and imported from there as
    ``posereg_flows_at_REF`` and ``posereg_losses_at_REF`` (the losses' flow import is pointed at
    the former).
    """

    def source(path: str) -> str:
        try:
            return subprocess.run(
                ["git", "show", f"{ref}:{path}"], cwd=ROOT, check=True, capture_output=True,
                text=True,
            ).stdout  # fmt: skip
        except subprocess.CalledProcessError as e:
            sys.exit(f"cannot read {path} at {ref!r} with git show: {e.stderr.strip()}")

    tag = "".join(c if c.isalnum() else "_" for c in ref)
    flows_name, losses_name = f"posereg_flows_at_{tag}", f"posereg_losses_at_{tag}"
    import_line = "from posereg.flows import RealNVP"
    losses_src = source("src/posereg/losses.py")
    if import_line not in losses_src:
        sys.exit(f"{ref}:src/posereg/losses.py has no line {import_line!r}; cannot pin its flow")
    folder = Path(tempfile.mkdtemp(prefix="posereg_baseline_"))
    (folder / f"{flows_name}.py").write_text(source("src/posereg/flows.py"))
    (folder / f"{losses_name}.py").write_text(
        losses_src.replace(import_line, f"from {flows_name} import RealNVP")
    )
    module = None
    for name in (flows_name, losses_name):  # flows first: the losses import it
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before executing: the files define dataclasses
        spec.loader.exec_module(module)
    assert module is not None
    return module


def bench_model(name: str, args: argparse.Namespace, baseline: types.ModuleType) -> dict:
    """Time one model's ``l1``, ``rle`` and ``rle@REF`` steps, then the two RLE losses alone."""
    ref = f"rle@{args.baseline_ref}"

    def old_loss(rle: torch.nn.Module) -> torch.nn.Module:
        old = baseline.RLELoss(dim=2)
        old.flow.load_state_dict(rle.flow.state_dict())  # same parameters, same layout
        return old

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    result = train_step_overhead(
        MODELS[name], args.rounds, args.steps, extra={ref: old_loss},
        unlabelled=args.unlabelled, optimizer_options=ADAM[args.adam], clock=clock,
    )  # fmt: skip
    model, images, target, weight = result["batch"]
    rle, old = result["criteria"]["rle"], result["criteria"][ref]
    # parity on one batch (no optimizer step): the two RLE implementations, same parameters
    with torch.no_grad():
        out = model(images)
        loss_new = float(rle(out.mu, out.sigma, target, weight))
        loss_old = float(old(out.mu, out.sigma, target, weight))
    # the loss alone (forward + backward on the B x K points, no backbone): less noisy
    mu = out.mu.detach().requires_grad_()
    sigma = out.sigma.detach().requires_grad_()
    loss_only = {
        vname: (lambda c=criterion: c(mu, sigma, target, weight).backward())
        for vname, criterion in (("rle", rle), (ref, old))
    }
    loss_times = interleaved_times(
        loss_only, args.rounds, 10 * args.steps, rotate=True, clock=clock
    )
    return {
        "loss_only": medians(loss_times),
        "model": result["model"],
        "median": result["median"],
        "loss": (loss_new, loss_old),
    }


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
        f"torch {torch.__version__}, {args.threads} thread(s), clock {args.clock}, adam "
        f"{args.adam}, {args.rounds} rounds x "
        f"{args.steps} steps, unlabelled {args.unlabelled:.0%}, baseline {args.baseline_ref}\n"
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
        print(f"{r['model']}: loss rle {new:.7f} vs {ref} {old:.7f} (diff {new - old:+.2e})")


if __name__ == "__main__":
    main()
