"""Cost of the RLE normaliser log s: the train step with log s on (sampling) vs off, 2D and 3D.

    python benchmarks/bench_log_s.py [--threads 1] [--rounds 7] [--steps 3] [--grid]
        [--samples N] [--models main lifter] [--clock wall] [--two-calls]
    python benchmarks/bench_log_s.py --accuracy [--seeds 32]

Issue 19, section 1 (cost). Both models train with RLE in the paper convention (Eq. 8, Laplace Q,
RealNVP 6 x 64); the variants differ only in the log s term:

- ``off``: ``RLELoss(convention="paper")``;
- ``on``: the same with ``log_s=True`` (the default estimator: importance sampling from Q on
  ``--samples`` fixed points, default ``LOG_S_SAMPLES``: 1024 in 2D, 512 in 3D;
  ``RLELoss.log_normalizer``);
- ``two_calls`` (with ``--two-calls``): ``on``, but the flow runs on the keypoints and on the
  points x_i ~ Q in two calls (the code before the concatenated call; ``TwoCallsRLELoss``);
- ``grid`` (with ``--grid``): ``log_s=True, log_s_method="grid"``, the appendix's Riemann sum
  (256^2 or 48^3 flow evaluations per step), the estimator that issue 19 found too slow.

``--accuracy`` times nothing: it measures the sampling estimator's bias and spread over the
scramble seeds (``log_s_seed`` 0..``--seeds``-1) at n = 256, 512, 1024 against a reference, for
random RealNVP flows (``init_gain=1``, seeds 0 and 1) and the seed-0 flow made 4x narrower (its
prior's scale 0.25), Laplace Q, D = 2 and 3. Reference: the Riemann sum Richardson-extrapolated
from two grids (2D 128 and 256 cells, 3D 24 and 48), and for the narrow 3D flow the sampling
estimate on 2^17 points of another scramble (a grid that resolves it takes ~10^6 evaluations).

Models: the main job's (configs/synth_rle.yaml: its backbone, width, input size and batch size;
the flow sees B x K = 64 x 17 points) and the lifter (configs/lift_synth_rle.yaml: FC 1024 x 2
blocks, batch 128, 17 joints in 3D). For the main model the step is
``posereg.bench.cost.train_step_overhead``'s, which also times L1 and the official RLE
convention (``l1``, ``rle``) beside them; for the lifter it is ``posereg.bench.cost.train_step``
on the lifter (forward, loss, backward, Adam step; the engine's gradient clipping is left out,
which makes the step shorter and the ratio, if anything, higher). Every variant of a model runs
in the same process, interleaved round by round in a rotated order (``interleaved_times``), so
machine load hits them alike. Reported: the median seconds per step of each variant and the
ratio on / off per round, its median and range over the rounds (the target is <= 1.1).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from posereg.bench.cost import (
    StepModel,
    interleaved_times,
    medians,
    train_step,
    train_step_overhead,
)
from posereg.config import load_config, load_lift_config
from posereg.engine.lift import build_lift_model
from posereg.flows import RealNVP
from posereg.losses import LOG_S_SAMPLES, RLELoss

ROOT = Path(__file__).resolve().parents[1]
MAIN_CONFIG = ROOT / "configs" / "synth_rle.yaml"
LIFT_CONFIG = ROOT / "configs" / "lift_synth_rle.yaml"


class TwoCallsRLELoss(RLELoss):
    """``RLELoss`` with log s on, the flow called apart on the keypoints and on x_i ~ Q."""

    def _log_g_and_more(
        self, bar_mu: torch.Tensor, weight: torch.Tensor | None, more: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        log_g, _ = super()._log_g_and_more(bar_mu, weight, None)
        return log_g, None if more is None else self.flow.log_prob(more.to(bar_mu))


def variants(
    dim: int, samples: int | None, grid: bool, two_calls: bool = False
) -> dict[str, Callable[[nn.Module], RLELoss]]:
    """name -> a function of a model's RLE criterion giving the variant, on the same flow."""

    def make(cls: type[RLELoss] = RLELoss, **options) -> Callable[[nn.Module], RLELoss]:
        return lambda rle: cls(dim=dim, q="laplace", convention="paper", flow=rle.flow, **options)

    out = {"off": make(), "on": make(log_s=True, log_s_samples=samples)}
    if two_calls:
        out["two_calls"] = make(TwoCallsRLELoss, log_s=True, log_s_samples=samples)
    if grid:
        out["grid"] = make(log_s=True, log_s_method="grid")
    return out


def _flow(dim: int, seed: int, scale: float = 1.0) -> RealNVP:
    torch.manual_seed(seed)
    flow = RealNVP(dim=dim, init_gain=1.0).double()
    flow.prior_scale.fill_(scale)
    return flow


@torch.no_grad()
def accuracy(num_seeds: int) -> None:
    """Bias and spread over scramble seeds of the sampling estimate of log s (see the docstring)."""
    print(
        "| D | G_phi | reference log s | n | bias (mean error) | std over seeds | max abs error |"
    )
    print("|---|---|---|---|---|---|---|")
    for dim in (2, 3):
        flows = {"random RealNVP (seed 0)": _flow(dim, 0), "random RealNVP (seed 1)": _flow(dim, 1),
                 "random, 4x narrower": _flow(dim, 0, 0.25)}  # fmt: skip
        for name, flow in flows.items():

            def log_s(method: str, dim: int = dim, flow: RealNVP = flow, **options) -> float:
                crit = RLELoss(dim=dim, convention="paper", log_s=True, flow=flow, **options)
                return float(crit.log_normalizer(dtype=torch.float64, method=method))

            if dim == 3 and "narrower" in name:
                ref = log_s("sampling", log_s_samples=2**17, log_s_seed=12345)
            else:
                coarse = 128 if dim == 2 else 24
                a = log_s("grid", log_s_points=coarse)
                b = log_s("grid", log_s_points=2 * coarse)
                ref = (4 * b - a) / 3
            for n in (256, 512, 1024):
                err = torch.tensor(
                    [
                        log_s("sampling", log_s_samples=n, log_s_seed=s) - ref
                        for s in range(num_seeds)
                    ]  # fmt: skip
                )
                print(f"| {dim} | {name} | {ref:.4f} | {n} | {float(err.mean()):+.4f} | "
                      f"{float(err.std()):.4f} | {float(err.abs().max()):.4f} |", flush=True)  # fmt: skip


def bench_main(args: argparse.Namespace) -> tuple[str, dict[str, list[float]]]:
    """The main job's model (configs/synth_rle.yaml): per-round seconds per step per variant."""
    cfg = load_config(MAIN_CONFIG)
    h, w = cfg.data.input_size
    model = StepModel("main", cfg.model.backbone, cfg.model.width, (h, w), cfg.train.batch_size)
    result = train_step_overhead(
        model, args.rounds, args.steps, extra=variants(2, args.samples, args.grid, args.two_calls),
        clock=args.clock,
    )  # fmt: skip
    return f"{result['model']} (configs/synth_rle.yaml)", result["rounds"]


def bench_lifter(args: argparse.Namespace) -> tuple[str, dict[str, list[float]]]:
    """The lifter (configs/lift_synth_rle.yaml): per-round seconds per step per variant."""
    cfg = load_lift_config(LIFT_CONFIG)
    torch.manual_seed(0)
    model = build_lift_model(cfg).train()  # dropout on, as in training
    rle = model.criterion
    assert isinstance(rle, RLELoss)
    b, j = cfg.train.batch_size, model.num_joints
    keypoints_2d = 100 * torch.rand(b, 17, 2)  # h36m17 input, pixels
    target = torch.randn(b, j, 3)  # standardised root-relative joints
    weight = model.joint_weight.expand(b, -1, -1)  # (B, J, 1), the pelvis 0
    body = [p for n, p in model.named_parameters() if "criterion." not in n]
    runners = {}
    for name, make in variants(3, args.samples, args.grid, args.two_calls).items():
        criterion = make(rle)
        optimizer = torch.optim.Adam(body + list(criterion.parameters()), lr=1e-5)
        runners[name] = train_step(model, criterion, optimizer, keypoints_2d, target, weight)
    times = interleaved_times(runners, args.rounds, args.steps, rotate=True, clock=args.clock)
    label = (
        f"FC lifter {cfg.model.hidden} x {cfg.model.num_blocks} b{b} (configs/lift_synth_rle.yaml)"
    )
    return label, times


def report(label: str, times: dict[str, list[float]]) -> list[str]:
    """Markdown rows: ms per step of each variant, and on / off (and grid / off) per round."""
    med = medians(times)
    rows = []
    for variant in [v for v in ("on", "two_calls", "grid") if v in times]:
        ratios = [a / b for a, b in zip(times[variant], times["off"], strict=True)]
        rows.append(
            f"| {label} | {variant} / off | {med['off'] * 1e3:.1f} | {med[variant] * 1e3:.1f} | "
            f"{statistics.median(ratios):.3f} | {min(ratios):.3f}..{max(ratios):.3f} |"
        )
    others = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in med.items() if k in ("l1", "rle"))
    return rows + ([f"|  | (also: {others}) | | | | |"] if others else [])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    p.add_argument(
        "--samples", type=int, help=f"points of the sampling estimate (default {LOG_S_SAMPLES})"
    )
    p.add_argument("--grid", action="store_true", help="also time the Riemann-sum estimator")
    p.add_argument(
        "--two-calls", action="store_true", help="also time log s with a separate flow call"
    )
    p.add_argument("--models", nargs="+", default=["main", "lifter"], choices=["main", "lifter"])
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--accuracy", action="store_true", help="measure bias and spread, no timing")
    p.add_argument("--seeds", type=int, default=32, help="--accuracy: scramble seeds")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.accuracy:
        accuracy(args.seeds)
        return
    args.clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds x "
        f"{args.steps} steps, log s by sampling on "
        f"{args.samples or f'the default points {LOG_S_SAMPLES}'}\n"
    )
    print("| model | ratio | off ms/step | variant ms/step | median ratio | range |")
    print("|---|---|---|---|---|---|")
    benches = {"main": bench_main, "lifter": bench_lifter}
    for name in args.models:
        label, times = benches[name](args)
        print("\n".join(report(label, times)), flush=True)


if __name__ == "__main__":
    main()
