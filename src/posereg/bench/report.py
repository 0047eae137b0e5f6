"""The Markdown report of a ``posereg bench`` run (issue 10): tables, plots, the paper's claims.

:func:`write_report` reads the ``results.json`` dict the runner writes (docs/bench.md, "Reading
the report") and, where a run's folder has them, its ``predictions.npz`` and checkpoint. It
computes nothing the runner already measured: it aggregates over seeds, pairs runs by seed,
applies one tie rule, draws the plots (matplotlib, Agg) and turns the numbers into sentences.

Vocabulary the report expects from the runner:

- ``run["group"]``: one of :data:`GROUPS` (``ablation`` = item 1 and 3, ``budget`` and
  ``noise`` = item 2, ``pretrained`` and ``convention`` = item 2's extra arms, ``flow`` and
  ``log_s`` = item 4); other groups get a generic table.
- ``run["arm"]``: the method; the names in :data:`ARM_LABELS` are the ones the paper's claims
  refer to (``rle`` = RLE with Laplace Q, the official default).
- ``run["params"]``: the conditions the group varies (``budget``, ``noise``, ...). Runs of one
  group with the same params apart from the arm keys (:data:`ARM_KEYS`) are one condition; in a
  condition, runs of two arms with the same seed are a pair.

The tie rule (one rule everywhere, :class:`Comparison`): A - B is the mean over seeds of the
per-seed difference (paired by seed). It counts as a win or a loss only when its absolute value
exceeds the spread, ``max(std of A, std of B, std of the paired differences)`` (sample standard
deviations over seeds); otherwise it is a tie. With fewer than 2 seeds there is no spread and
no verdict (``n/a``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "GROUPS",
    "ARM_LABELS",
    "ARM_KEYS",
    "PAPER_ORDER",
    "METRICS",
    "Spread",
    "Comparison",
    "spread",
    "compare",
    "regime_sentence",
    "residual_over_sigma",
    "learned_density_moments",
    "learned_marginal",
    "normalized_residuals",
    "plot_learned_density",
    "score_decomposition",
    "write_report",
]

GROUPS = ("ablation", "budget", "noise", "pretrained", "convention", "flow", "log_s", "sigma")

#: Arm name -> the label the report prints.
ARM_LABELS = {
    "l2": "L2",
    "l1": "L1",
    "gaussian_nll": "Gaussian NLL",
    "laplace_nll": "Laplace NLL",
    "dle": "DLE",
    "rle_gaussian": "RLE (Gaussian Q)",
    "rle": "RLE (Laplace Q)",
    "heatmap": "Heatmap",
    "integral": "Integral",
    "integral_rle": "Integral + RLE",
    "rle_paper": "RLE (paper convention)",
    "rle_paper_log_s": "RLE (paper convention, with log s)",
    "rle_from_heatmap": "RLE, backbone from a heatmap run",
    "l1_from_heatmap": "L1, backbone from a heatmap run",
}

#: params keys that describe the method, not the condition (left out when pairing runs).
ARM_KEYS = frozenset(
    {"arm", "loss", "head", "loss_options", "head_options", "init_from", "convention", "q",
     "log_s", "flow", "flow_layers", "flow_hidden"}
)  # fmt: skip

#: The paper's ordering (Tab. 1, 7), worst first.
PAPER_ORDER = ("l2", "l1", "gaussian_nll", "laplace_nll", "dle", "rle")

#: (metrics key, column title); error: lower is better.
METRICS = (
    ("ap_noisy", "AP vs labels"),
    ("ap_clean", "AP vs clean truth"),
    ("pck_0.1", "PCK@0.1"),
    ("err_sqrt_area", "error / sqrt(area)"),
)
LOWER_IS_BETTER = frozenset({"err_sqrt_area"})
REPORT_LEVELS = ("0.5", "0.8", "0.9", "0.95")


# --------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (ddof 1; NaN for one value) of ``n`` values."""

    mean: float
    std: float
    n: int

    def fmt(self, digits: int = 3, signed: bool = False) -> str:
        """``0.372 ± 0.005``; ``0.372 (1 seed)``; ``-`` when there are no values."""
        if self.n == 0 or not math.isfinite(self.mean):
            return "-"
        sign = "+" if signed else ""
        m = f"{self.mean:{sign}.{digits}f}"
        return f"{m} (1 seed)" if self.n == 1 else f"{m} ± {self.std:.{digits}f}"


def spread(values: Iterable[float]) -> Spread:
    """Mean ± sample std of the finite ``values``."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return Spread(float("nan"), float("nan"), 0)
    std = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return Spread(float(v.mean()), std, int(v.size))


@dataclass(frozen=True)
class Comparison:
    """A - B over seeds, paired by seed, with the tie rule of the module docstring.

    Attributes:
        diff: the per-seed differences A - B (mean ± std).
        a, b: A's and B's values over their seeds.
        higher_is_better: False for errors (a negative difference is then a win).
    """

    diff: Spread
    a: Spread
    b: Spread
    higher_is_better: bool = True

    @property
    def threshold(self) -> float:
        """The spread a difference must exceed: max(std A, std B, std of the differences)."""
        stds = [s for s in (self.a.std, self.b.std, self.diff.std) if math.isfinite(s)]
        return max(stds) if stds and self.diff.n >= 2 else float("nan")

    @property
    def verdict(self) -> str:
        """``win`` (A better), ``loss`` (B better), ``tie`` or ``n/a`` (fewer than 2 seeds)."""
        t = self.threshold
        if not math.isfinite(t) or not math.isfinite(self.diff.mean):
            return "n/a"
        if abs(self.diff.mean) <= t:
            return "tie"
        better = self.diff.mean > 0 if self.higher_is_better else self.diff.mean < 0
        return "win" if better else "loss"


def compare(a: dict[int, float], b: dict[int, float], higher_is_better: bool = True) -> Comparison:
    """A - B from per-seed values ``{seed: value}``; only seeds both have are paired."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds if _finite(a[s]) and _finite(b[s])]
    return Comparison(spread(diffs), spread(a.values()), spread(b.values()), higher_is_better)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


# --------------------------------------------------------------------------- runs
def _label(arm: str) -> str:
    return ARM_LABELS.get(arm, arm)


def _metric(run: dict, key: str) -> float:
    v = (run.get("metrics") or {}).get(key)
    return float(v) if _finite(v) else float("nan")


def _condition(run: dict) -> tuple[tuple[str, str], ...]:
    params = run.get("params") or {}
    return tuple(
        sorted((k, json.dumps(v, sort_keys=True)) for k, v in params.items() if k not in ARM_KEYS)
    )


def _condition_label(cond: tuple[tuple[str, str], ...]) -> str:
    if not cond:
        return "-"
    if len(cond) == 1:
        return str(json.loads(cond[0][1]))
    return ", ".join(f"{k}={json.loads(v)}" for k, v in cond)


def _condition_labels(conds: Sequence[tuple[tuple[str, str], ...]]) -> dict[tuple, str]:
    """Short labels for the conditions of one group: only the keys whose values differ between
    them, the first as ``key=value`` and the rest in parentheses (no commas, so the labels can be
    listed in a sentence); the bare value when each condition has one key, the full label when
    nothing differs."""
    keys = list(dict.fromkeys(k for c in conds for k, _ in c))
    varying = [k for k in keys if len({dict(c).get(k) for c in conds}) > 1]
    if not varying or all(len(c) == 1 for c in conds):
        return {c: _condition_label(c) for c in conds}
    out = {}
    for c in conds:
        d = {k: json.loads(v) for k, v in c}
        first, *rest = [f"{k}={d.get(k)}" for k in varying]
        out[c] = first + (f" ({' '.join(rest)})" if rest else "")
    return out


def _group(results: dict, group: str) -> list[dict]:
    return [r for r in results.get("runs", []) if r.get("group") == group]


def _arms(runs: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["arm"] for r in runs))


def _by_seed(runs: Sequence[dict], arm: str, key: str, cond: tuple | None = None) -> dict:
    return {
        int(r["seed"]): _metric(r, key)
        for r in runs
        if r["arm"] == arm and (cond is None or _condition(r) == cond)
    }


def _conditions(runs: Sequence[dict]) -> list[tuple]:
    return list(dict.fromkeys(_condition(r) for r in runs))


def _run_file(run: dict, name: str) -> Path | None:
    d = run.get("run_dir")
    if not d:
        return None
    path = Path(d) / name
    return path if path.is_file() else None


# --------------------------------------------------------------------------- tables
def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _arm_table(runs: Sequence[dict], cond: tuple | None = None) -> list[str]:
    header = ["arm", "seeds", *(t for _, t in METRICS), "steps", "wall s"]
    rows = []
    for arm in _arms(runs):
        mine = [r for r in runs if r["arm"] == arm and (cond is None or _condition(r) == cond)]
        if not mine:
            continue
        cells = [_label(arm), str(len(mine))]
        cells += [spread(_metric(r, k) for r in mine).fmt(4 if k == "err_sqrt_area" else 3)
                  for k, _ in METRICS]  # fmt: skip
        cells.append(spread(float(r.get("steps", float("nan"))) for r in mine).fmt(0))
        cells.append(spread(float(r.get("wall_s", float("nan"))) for r in mine).fmt(0))
        rows.append(cells)
    return _table(header, rows)


def _verdict_word(c: Comparison, a: str, b: str) -> str:
    return {"win": f"{a} better", "loss": f"{b} better", "tie": "tie", "n/a": "n/a (< 2 seeds)"}[
        c.verdict
    ]


def _comparison_row(runs: Sequence[dict], a: str, b: str, key: str, cond=None) -> list[str]:
    c = compare(_by_seed(runs, a, key, cond), _by_seed(runs, b, key, cond),
                key not in LOWER_IS_BETTER)  # fmt: skip
    t = c.threshold
    return [f"{_label(a)} - {_label(b)}", key, c.diff.fmt(3, signed=True),
            f"{t:.3f}" if math.isfinite(t) else "-", _verdict_word(c, _label(a), _label(b))]  # fmt: skip


_CMP_HEADER = ("difference", "metric", "mean ± std (paired by seed)", "spread", "verdict")


def _order_chain(runs: Sequence[dict], arms: Sequence[str], key: str) -> str:
    """Arms sorted by mean ``key``, worst first, joined by '<' (a win) or '≈' (a tie)."""
    means = {a: spread(_by_seed(runs, a, key).values()).mean for a in arms}
    ranked = sorted((a for a in arms if math.isfinite(means[a])), key=lambda a: means[a])
    if not ranked:
        return "-"
    out = _label(ranked[0])
    for lo, hi in zip(ranked, ranked[1:], strict=False):
        c = compare(_by_seed(runs, hi, key), _by_seed(runs, lo, key))
        out += (" < " if c.verdict == "win" else " ≈ ") + _label(hi)
    return out


# --------------------------------------------------------------------------- item 2
def regime_sentence(rows: dict[str, list[tuple[str, Comparison]]]) -> str:
    """Where RLE beats L1, as one sentence computed from the comparisons.

    Arguments:
        rows: kind of comparison (``"equal steps"``, ``"equal wall time"``, ``"noise"``) ->
            [(condition label, RLE - L1 comparison)] in sweep order.

    Returns:
        "RLE beats L1 ... at equal steps only at budget 2 (a tie at 6, 18) ..." or, when no
        comparison is a win, "No regime where RLE beats L1 was found within the sweep (...)".
    """
    rows = {k: v for k, v in rows.items() if v}
    if not rows:
        return "The sweep has no paired RLE and L1 runs, so no regime can be stated."
    words = {"win": "RLE better", "loss": "L1 better", "tie": "tie", "n/a": "n/a"}

    def tested(kind: str) -> str:
        return ", ".join(f"{lbl}: {words[c.verdict]}" for lbl, c in rows[kind])

    wins = {k: [lbl for lbl, c in v if c.verdict == "win"] for k, v in rows.items()}
    if not any(wins.values()):
        detail = "; ".join(f"{k}: {tested(k)}" for k in rows)
        return (
            "No regime where RLE beats L1 (AP against the clean truth, beyond the spread) "
            f"was found within the sweep ({detail})."
        )
    parts = []
    for kind, won in wins.items():
        labels = [lbl for lbl, _ in rows[kind]]
        if not won:
            parts.append(f"at no {kind} point ({tested(kind)})")
        elif len(won) == len(labels):
            parts.append(f"at every {kind} point ({', '.join(labels)})")
        else:
            others = [f"{lbl}: {words[c.verdict]}" for lbl, c in rows[kind] if lbl not in won]
            parts.append(f"at {kind} only at {', '.join(won)} (not at {', '.join(others)})")
    return (
        "RLE beats L1 in AP against the clean truth (beyond the spread) " + "; ".join(parts) + "."
    )


def _wall_curves(runs: Sequence[dict], arm: str, key: str) -> dict[int, list[tuple[float, float]]]:
    """seed -> [(wall s, metric)] of ``arm``'s runs over the budgets, sorted by wall time."""
    curves: dict[int, list[tuple[float, float]]] = {}
    for r in runs:
        if r["arm"] == arm and _finite(r.get("wall_s")) and r["wall_s"] > 0:
            curves.setdefault(int(r["seed"]), []).append((float(r["wall_s"]), _metric(r, key)))
    return {seed: sorted(c) for seed, c in curves.items()}


def _at_wall(curve: list[tuple[float, float]], wall: float) -> float | None:
    """The metric of ``curve`` at ``wall`` (linear in log wall time); None outside its range."""
    if len(curve) < 2 or not curve[0][0] <= wall <= curve[-1][0]:
        return None
    return float(np.interp(np.log(wall), np.log([p[0] for p in curve]), [p[1] for p in curve]))


def _budget_rows(runs: Sequence[dict], key: str = "ap_clean") -> tuple[list, list, list]:
    """(equal-steps rows, equal-wall-time rows, (steps, wall s) per row) for the budget group.

    Equal wall time, per seed and budget: L1's metric interpolated (linear in log wall time
    between L1's budget points) at the RLE run's wall time; where that lies outside L1's range,
    RLE's metric interpolated at the L1 run's wall time instead; a seed with neither is left out.
    The wall s of a row is the mean over seeds of the wall time the two were compared at.
    """
    conds = _conditions(runs)
    steps_of = {c: spread(float(r.get("steps", np.nan)) for r in runs if _condition(r) == c).mean
                for c in conds}  # fmt: skip
    conds.sort(key=lambda c: steps_of[c] if math.isfinite(steps_of[c]) else 0.0)
    labels = _condition_labels(conds)
    steps_rows, wall_rows, xs = [], [], []
    curve = {arm: _wall_curves(runs, arm, key) for arm in ("l1", "rle")}
    for c in conds:
        rle, l1 = _by_seed(runs, "rle", key, c), _by_seed(runs, "l1", key, c)
        if not rle or not l1:
            continue
        steps_rows.append((labels[c], compare(rle, l1)))
        wall = {arm: {int(r["seed"]): float(r["wall_s"]) for r in runs
                      if r["arm"] == arm and _condition(r) == c and _finite(r.get("wall_s"))}
                for arm in ("l1", "rle")}  # fmt: skip
        a, b, at = {}, {}, []
        for seed in sorted(set(rle) & set(l1)):
            w_rle, w_l1 = wall["rle"].get(seed), wall["l1"].get(seed)
            l1_there = _at_wall(curve["l1"].get(seed, []), w_rle) if w_rle else None
            rle_there = _at_wall(curve["rle"].get(seed, []), w_l1) if w_l1 else None
            if l1_there is not None:  # implies w_rle
                a[seed], b[seed] = rle[seed], l1_there
                at.append(w_rle)
            elif rle_there is not None:  # implies w_l1
                a[seed], b[seed] = rle_there, l1[seed]
                at.append(w_l1)
        wall_rows.append((labels[c], compare(a, b)))
        xs.append((steps_of[c], float(np.mean(at)) if at else float("nan")))
    return steps_rows, wall_rows, xs


def _plot_diffs(ax, x, rows, xlabel: str, categorical: bool = False) -> None:
    means = [c.diff.mean for _, c in rows]
    stds = [c.diff.std if math.isfinite(c.diff.std) else 0.0 for _, c in rows]
    pos = list(range(len(rows))) if categorical else x
    ax.errorbar(pos, means, yerr=stds, marker="o", capsize=4)
    ax.axhline(0.0, color="grey", lw=1, ls="--")
    if categorical:
        ax.set_xticks(pos, [lbl.replace(" (", "\n(") for lbl, _ in rows])
    elif len(x) > 1 and min(x) > 0:
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:.0f}" for v in x])  # the measured points, not 3x10^2-style ticks
        ax.xaxis.set_minor_formatter("")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("RLE - L1, AP vs clean truth")


def _figure(ncols: int = 1, width: float = 5.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 3.6), squeeze=False)
    return plt, fig, list(axes[0])


def _save(plt, fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- instance scores
def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _run_config(run: dict):
    from posereg.config import load_config

    path = _run_file(run, "config.yaml")
    return None if path is None else load_config(path)


def _val_ann(run: dict, cfg) -> Path | None:
    for p in (Path(cfg.data.val_ann), Path(run["run_dir"]) / cfg.data.val_ann):
        if p.is_file():
            return p
    return None


def score_decomposition(l1_run: dict, rle_run: dict) -> dict[str, float] | str:
    """AP against the clean truth of L1's and RLE's keypoints under swapped instance scores.

    Both runs' ``predictions.npz`` are aligned by ``ann_id``; the COCO evaluation is the repo's
    (:func:`posereg.metrics.evaluate_coco` with ``use_clean=True`` on the run's ``data.val_ann``,
    OKS sigmas of its skeleton), with ground-truth boxes as in the runs.

    Returns:
        ``{"l1", "l1_const", "l1_rle_score", "rle", "rle_const"}``, or why it cannot be computed.
    """
    from posereg.metrics import evaluate_coco
    from posereg.models.build import data_skeleton

    files = [_run_file(r, "predictions.npz") for r in (l1_run, rle_run)]
    if None in files:
        return "predictions.npz missing"
    cfg = _run_config(l1_run)
    if cfg is None:
        return f"{l1_run.get('run_dir')}/config.yaml missing"
    gt = _val_ann(l1_run, cfg)
    if gt is None:
        return f"validation annotations {cfg.data.val_ann} not found"
    l1, rle = (_load_npz(f) for f in files)  # type: ignore[arg-type]
    index = {int(a): i for i, a in enumerate(rle["ann_id"])}
    missing = [int(a) for a in l1["ann_id"] if int(a) not in index]
    if missing:
        return f"{len(missing)} instances of the L1 run are not in the RLE run (ann ids differ)"
    order = np.array([index[int(a)] for a in l1["ann_id"]])
    sigmas = data_skeleton(cfg).sigmas

    def ap(p: dict, score: np.ndarray) -> float:
        n, k = p["keypoint_conf"].shape
        kp = np.concatenate([p["keypoints"], p["keypoint_conf"][..., None]], -1).reshape(n, 3 * k)
        entries = [{"image_id": int(i), "category_id": 1, "keypoints": row.tolist(),
                    "score": float(s)} for i, row, s in zip(p["image_id"], kp, score, strict=True)]  # fmt: skip
        return evaluate_coco(str(gt), entries, sigmas=sigmas, use_clean=True).ap

    ones = np.ones(len(l1["ann_id"]))
    return {
        "l1": ap(l1, l1["instance_score"]),
        "l1_const": ap(l1, ones),
        "l1_rle_score": ap(l1, rle["instance_score"][order]),
        "rle": ap(rle, rle["instance_score"]),
        "rle_const": ap(rle, np.ones(len(rle["ann_id"]))),
    }


def _decomposition_section(results: dict) -> list[str]:
    out = ["### Where the AP gap comes from: instance score vs location", ""]
    rows = []
    notes = set()
    for group in ("ablation", "budget", "noise"):
        runs = _group(results, group)
        labels = _condition_labels(_conditions(runs))
        for cond in _conditions(runs):
            per_seed: dict[str, dict[int, float]] = {}
            for r in runs:
                if r["arm"] != "l1" or _condition(r) != cond:
                    continue
                mate = [q for q in runs if q["arm"] == "rle" and q["seed"] == r["seed"]
                        and _condition(q) == cond]  # fmt: skip
                if not mate:
                    continue
                try:
                    d = score_decomposition(r, mate[0])
                except (OSError, ValueError, KeyError) as e:  # say it, keep the report
                    d = f"{r.get('key')}: {e}"
                if isinstance(d, str):
                    notes.add(d)
                    continue
                d["score_part"] = d["l1_rle_score"] - d["l1"]
                d["location_part"] = d["rle"] - d["l1_rle_score"]
                d["location_const"] = d["rle_const"] - d["l1_const"]
                for k, v in d.items():
                    per_seed.setdefault(k, {})[int(r["seed"])] = v
            if per_seed:
                label = group if not cond else f"{group}: {labels[cond]}"
                keys = ("l1", "l1_const", "l1_rle_score", "rle", "rle_const",
                        "score_part", "location_part", "location_const")  # fmt: skip
                rows.append([label] + [spread(per_seed[k].values()).fmt(3, signed=k.endswith(("part", "const")) and k.startswith(("score", "location"))) for k in keys])  # fmt: skip
    if not rows:
        out.append("Not computed: " + ("; ".join(sorted(notes)) if notes else "no paired L1 and RLE runs") + ".")  # fmt: skip
        return out + [""]
    out += [
        "AP against the clean truth (mean ± std over seeds). L1's keypoints scored with a "
        "constant, and with the RLE model's instance score on the same instances; the gap "
        "RLE - L1 splits into the score part (L1 with RLE's score - L1) and the location part "
        "(RLE - L1 with RLE's score); with constant scores on both, only location remains.",
        "",
    ]
    out += _table(["runs", "L1", "L1, constant score", "L1, RLE's score", "RLE",
                   "RLE, constant score", "score part", "location part",
                   "location (both constant)"], rows)  # fmt: skip
    if notes:
        out += ["", "Left out: " + "; ".join(sorted(notes)) + "."]
    return out + [""]


# --------------------------------------------------------------------------- item 5
def _log_density_2d(criterion, grid: np.ndarray) -> np.ndarray:
    """log of the (unnormalized) density of bar_mu that ``criterion`` fits, at (N, 2) points.

    The law is the one :func:`posereg.uncertainty.learned_density` names (one rule for the
    regions and this plot): the flow G_phi itself, or Q G_phi for RLE ``paper`` with log s.
    """
    import torch

    from posereg.losses import DLELoss, RLELoss
    from posereg.uncertainty import learned_density

    if not isinstance(criterion, DLELoss | RLELoss):
        raise ValueError(f"{type(criterion).__name__} has no learned density (RLE or DLE only)")
    x = torch.as_tensor(grid, dtype=torch.float32)
    with torch.no_grad():
        log_g = criterion.flow.log_prob(x).double().numpy()
    if learned_density(criterion) == "flow":
        return log_g
    g = np.asarray(grid, dtype=np.float64)
    log_q = -np.abs(g) if criterion.q == "laplace" else -0.5 * g**2  # Eq. 8, unit-scale Q
    return log_q.sum(-1) + log_g


def learned_marginal(
    criterion, x: np.ndarray, half_width: float = 10.0, points: int = 401
) -> np.ndarray:
    """The learned density of bar_mu along x: the 2D density integrated over y on a grid.

    The 2D density (:func:`_log_density_2d`) is normalized by a midpoint sum
    over [-half_width, half_width]^2 with ``points`` cells per axis, summed over y, and
    interpolated at ``x``.

    Arguments:
        criterion: a trained :class:`posereg.losses.RLELoss` or ``DLELoss``.
        x: (M,) points, in sigma units.

    Returns:
        (M,) density values (integrating to 1 over the grid).
    """
    h = 2 * half_width / points
    axis = np.linspace(-half_width + h / 2, half_width - h / 2, points)
    gx, gy = np.meshgrid(axis, axis, indexing="ij")
    log_p = _log_density_2d(criterion, np.stack([gx.ravel(), gy.ravel()], -1)).reshape(gx.shape)
    p = np.exp(log_p - log_p.max())
    p /= p.sum() * h * h
    marginal = p.sum(axis=1) * h  # integrate over y
    return np.interp(np.asarray(x, dtype=np.float64), axis, marginal, left=0.0, right=0.0)


def normalized_residuals(pred: dict[str, np.ndarray], convention: str = "paper") -> np.ndarray:
    """x-coordinates of bar_mu of visible keypoints from a ``predictions.npz`` dict: (M,).

    ``paper`` (and DLE): (truth - mu) / sigma; ``official``: (mu - truth) / sigma, the sign
    the official loss feeds its flow.
    """
    if "sigma" not in pred:
        raise ValueError("predictions.npz has no sigma (a head without a density)")
    vis = pred["visible"].astype(bool)
    r = (pred["truth_clean"] - pred["keypoints"]) / np.maximum(pred["sigma"], 1e-12)
    r = r[..., 0][vis]
    return -r if convention == "official" else r


def _marginal_moments(
    criterion, half: float, n: int
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(std, excess kurtosis, grid, marginal) of the learned marginal on [-half, half]."""
    h = 2 * half / n
    grid = np.linspace(-half + h / 2, half - h / 2, n)
    pg = learned_marginal(criterion, grid, half, n)
    m2 = float((grid**2 * pg).sum() * h)
    m4 = float((grid**4 * pg).sum() * h)
    return math.sqrt(m2), m4 / m2**2 - 3.0, grid, pg


def _scaled_moments(criterion) -> tuple[float, float, float, int]:
    """(std, excess kurtosis, half width, cells) of the learned marginal on a grid that follows
    its own scale: a first pass on [-10, 10] finds the std s0, the second uses [-12 s0, 12 s0]
    with 801 cells (~33 per s0)."""
    s0, _, _, _ = _marginal_moments(criterion, 10.0, 801)
    half, n = 12.0 * s0, 801
    s, kurt, _, _ = _marginal_moments(criterion, half, n)
    return s, kurt, half, n


def learned_density_moments(criterion) -> dict[str, float]:
    """``{"std", "excess_kurtosis"}`` of the learned marginal of bar_mu along x (the density
    :func:`learned_marginal` integrates; Gaussian 0, Laplace 3), on the grid of
    :func:`plot_learned_density`."""
    s, kurt, _, _ = _scaled_moments(criterion)
    return {"std": s, "excess_kurtosis": kurt}


def plot_learned_density(criterion, residuals_x: np.ndarray | None, path: Path) -> dict[str, float]:
    """Fig. 4: the learned marginal of bar_mu next to a Gaussian and a Laplace of the same std
    (the learned marginal's) and the histogram of validation residuals; linear and log axes.

    The grid follows the density's own scale (bar_mu's spread is not 1 in general: the official
    loss lets sigma grow while the flow concentrates): a first pass on [-10, 10] finds the std s,
    the moments and the plot then use [-12 s, 12 s] with 801 cells (~33 per s).

    Returns:
        ``{"std", "excess_kurtosis"}`` of the learned marginal (Gaussian 0, Laplace 3).
    """
    s, kurt, half, n = _scaled_moments(criterion)
    x = np.linspace(-6 * s, 6 * s, 601)
    learned = learned_marginal(criterion, x, half, n)
    gauss = np.exp(-0.5 * (x / s) ** 2) / (s * math.sqrt(2 * math.pi))
    b = s / math.sqrt(2)
    laplace = np.exp(-np.abs(x) / b) / (2 * b)
    plt, fig, axes = _figure(2)
    for ax, log in zip(axes, (False, True), strict=True):
        if residuals_x is not None and len(residuals_x):
            inside = residuals_x[np.abs(residuals_x) <= 6 * s]
            ax.hist(inside, bins=80, range=(-6 * s, 6 * s), density=True, alpha=0.35, color="grey",
                    label=f"val residuals ({len(inside)} of {len(residuals_x)})",
                    weights=np.full(len(inside), len(inside) / max(len(residuals_x), 1)))  # fmt: skip
        ax.plot(x, learned, lw=2, label="learned (flow)")
        ax.plot(x, gauss, ls="--", label="Gaussian, same std")
        ax.plot(x, laplace, ls=":", label="Laplace, same std")
        ax.set_xlabel("bar_mu along x (units of the predicted sigma)")
        if log:
            ax.set_yscale("log")
            top = float(max(learned.max(), gauss.max(), laplace.max()))
            ax.set_ylim(top * 1e-4, top * 2)
        else:
            ax.legend(fontsize=7)
    _save(plt, fig, path)
    return {"std": s, "excess_kurtosis": kurt}


#: Fig. 4's claim holds when the excess kurtosis is clearly between the two laws: at least
#: KURTOSIS_MARGIN from each end (Gaussian 0, Laplace 3); nearer an end, the density is that law.
KURTOSIS_MARGIN = 0.3


def density_verdict(excess_kurtosis: float) -> str:
    """The Fig. 4 verdict for a learned marginal's excess kurtosis (see KURTOSIS_MARGIN)."""
    k = excess_kurtosis
    if KURTOSIS_MARGIN <= k <= 3.0 - KURTOSIS_MARGIN:
        return "agrees"
    if abs(k) < KURTOSIS_MARGIN:
        return "disagrees (Gaussian-like)"
    if abs(k - 3.0) < KURTOSIS_MARGIN:
        return "disagrees (Laplace-like)"
    return "disagrees (outside both)"


def _density_run(results: dict) -> dict | None:
    runs = sorted(results.get("runs", []), key=lambda r: (r.get("group") != "ablation", r["seed"]))
    for r in runs:
        if r["arm"] == "rle" and _run_file(r, "predictions.npz") is not None:
            if _run_file(r, "last.pt") or _run_file(r, "best.pt"):
                return r
    return None


def _density_section(results: dict, out_md: Path, image_dir: Path) -> tuple[list[str], dict]:
    out = ["## 5. The learned density (Fig. 4)", ""]
    run = _density_run(results)
    if run is None:
        return out + ["Not in this profile (no RLE run with predictions.npz and a checkpoint).", ""], {}  # fmt: skip
    from posereg.models.build import model_from_checkpoint

    ckpt = _run_file(run, "last.pt") or _run_file(run, "best.pt")
    path = image_dir / "learned_density.png"
    try:
        model, _, _ = model_from_checkpoint(ckpt)  # type: ignore[arg-type]
        criterion = model.criterion
        pred = _load_npz(_run_file(run, "predictions.npz"))  # type: ignore[arg-type]
        res = normalized_residuals(pred, getattr(criterion, "convention", "paper"))
        stats = plot_learned_density(criterion, res, path)
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # one bad run: say it, go on
        return out + [f"Not computed for run `{run.get('key')}`: {e}", ""], {}
    out += [
        f"Run `{run['key']}` (seed {run['seed']}, checkpoint {ckpt.name}). The flow's density "  # type: ignore[union-attr]
        "of bar_mu as the loss fits it (G_phi itself: without log s the flow's parameters get "
        "gradient only from -log G_phi, so it fits the residuals directly; docs/uncertainty.md), "
        "integrated over y on a "
        "grid, next to a Gaussian and a Laplace with the same standard deviation and the "
        "histogram of the validation residuals (clean truth) of the same run.",
        "",
        f"![learned density]({_rel(path, out_md)})",
        "",
        f"Learned marginal: std {stats['std']:.3f}, excess kurtosis "
        f"{stats['excess_kurtosis']:.2f} (Gaussian 0, Laplace 3); residuals: std "
        f"{float(np.std(res)):.3f} over {len(res)} keypoints.",
        "",
    ]
    return out, stats


def _rel(path: Path, out_md: Path) -> str:
    import os

    return Path(os.path.relpath(path.resolve(), out_md.resolve().parent)).as_posix()


# --------------------------------------------------------------------------- sections
def _runs_line(results: dict) -> str:
    """``runs: N (D distinct: T trained in this invocation, R reused from earlier ones)``; a run
    counts as reused when its training finished before the profile started (``timing``)."""
    runs = results.get("runs", [])
    distinct = {r.get("key"): r for r in runs}
    line = f"- runs: {len(runs)}"
    try:
        started = datetime.fromisoformat(results["started"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return line
    done = [r.get("timing", {}).get("finished") for r in distinct.values()]
    if not done or not all(_finite(t) for t in done):
        return line
    reused = sum(t < started for t in done)
    return (f"{line} ({len(distinct)} distinct: {len(distinct) - reused} trained in this "
            f"invocation, {reused} reused from earlier ones)")  # fmt: skip


def _cost_line(results: dict) -> list[str]:
    cost = results.get("cost")
    if not cost or not _finite(cost.get("wall_s")):
        return []
    return [f"- cost (item 6): measured in {cost['wall_s'] / 60:.1f} min at commit "
            f"`{cost.get('commit', '?')}`"]  # fmt: skip


def _head(results: dict) -> list[str]:
    m = results.get("machine") or {}
    wall = results.get("wall_s")
    wall_s = f"{wall / 60:.1f} min" if _finite(wall) else "-"
    return [
        f"# posereg bench: profile `{results.get('profile', '?')}`",
        "",
        "```",
        str(results.get("command", "?")),
        "```",
        "",
        f"- commit: `{results.get('commit', '?')}`",
        f"- seeds: {', '.join(str(s) for s in results.get('seeds', [])) or '-'}",
        f"- date: {results.get('started', '?')} to {results.get('finished', '?')}",
        f"- machine: {m.get('cpus', '?')} CPUs, torch {m.get('torch', '?')}, "
        f"Python {m.get('python', '?')}",
        f"- wall time of the profile: {wall_s}",
        _runs_line(results),
        *_cost_line(results),
        "",
        "Tie rule: a difference A - B (mean over seeds of the per-seed differences) counts only "
        "when it exceeds the spread, max(std of A, std of B, std of the paired differences); "
        "otherwise it is reported as a tie. Fig. 4's claim (a density between a Gaussian and a "
        f"Laplace) needs an excess kurtosis at least {KURTOSIS_MARGIN:g} from both 0 and 3.",
        "",
    ]


def _ablation_section(results: dict) -> tuple[list[str], dict[str, Comparison]]:
    out = ["## 1. Loss and head ablation (Tab. 1, 2, 7)", ""]
    runs = _group(results, "ablation")
    if not runs:
        return out + ["Not in this profile.", ""], {}
    out += _arm_table(runs) + [""]
    present = [a for a in PAPER_ORDER if a in _arms(runs)]
    claims: dict[str, Comparison] = {}
    out.append(f"Order found (AP vs clean truth, worst first): {_order_chain(runs, _arms(runs), 'ap_clean')}")  # fmt: skip
    out.append("")
    out.append(f"Order found (AP vs labels): {_order_chain(runs, _arms(runs), 'ap_noisy')}")
    out += ["", "Paper: L2 < L1 < Gaussian NLL < Laplace NLL < DLE < RLE, and RLE ≈ heatmap.", ""]
    rows = []
    for lo, hi in zip(present, present[1:], strict=False):
        c = compare(_by_seed(runs, hi, "ap_clean"), _by_seed(runs, lo, "ap_clean"))
        claims[f"{hi}>{lo}"] = c
        found = {"win": "agrees", "loss": "reversed", "tie": "tie", "n/a": "n/a"}[c.verdict]
        rows.append([f"{_label(lo)} < {_label(hi)}", c.diff.fmt(3, signed=True), found])
    if rows:
        out += _table(["paper's step", f"{'later'} - earlier, AP vs clean", "found"], rows) + [""]
    cmp_rows = []
    for a, b in (("rle", "l1"), ("rle", "heatmap"), ("rle", "rle_gaussian"), ("integral_rle", "integral")):  # fmt: skip
        if a in _arms(runs) and b in _arms(runs):
            for key in ("ap_noisy", "ap_clean"):
                cmp_rows.append(_comparison_row(runs, a, b, key))
            claims[f"{a}-{b}"] = compare(_by_seed(runs, a, "ap_clean"), _by_seed(runs, b, "ap_clean"))  # fmt: skip
    if cmp_rows:
        out += _table(_CMP_HEADER, cmp_rows) + [""]
    return out, claims


def _sweep_section(results: dict, out_md: Path, image_dir: Path) -> tuple[list[str], str | None]:
    out = ["## 2. When RLE helps (beyond the paper)", ""]
    budget, noise = _group(results, "budget"), _group(results, "noise")
    sentence = None
    if not budget and not noise:
        out += ["Budget and noise sweeps: not in this profile.", ""]
    else:
        steps_rows, wall_rows, xs = _budget_rows(budget) if budget else ([], [], [])
        noise_labels = _condition_labels(_conditions(noise))
        noise_rows = [(noise_labels[c], compare(_by_seed(noise, "rle", "ap_clean", c),
                       _by_seed(noise, "l1", "ap_clean", c))) for c in _conditions(noise)
                      if _by_seed(noise, "rle", "ap_clean", c) and _by_seed(noise, "l1", "ap_clean", c)]  # fmt: skip
        rows = []
        for kind, rr in (("equal steps", steps_rows), ("equal wall time", wall_rows), ("noise", noise_rows)):  # fmt: skip
            for lbl, c in rr:
                word = _verdict_word(c, "RLE", "L1")
                if kind == "equal wall time" and c.diff.n == 0:
                    word = "not computed (no seed's wall time inside the other arm's range)"
                rows.append([kind, lbl, c.diff.fmt(3, signed=True), str(c.diff.n),
                             f"{c.threshold:.3f}" if math.isfinite(c.threshold) else "-", word])  # fmt: skip
        out += ["RLE - L1 in AP against the clean truth, paired by seed. Equal wall time: "
                "L1's AP interpolated per seed (linear in log wall time between L1's budgets) at "
                "the RLE run's measured wall time, or, where that lies outside L1's range, RLE's "
                "AP interpolated at the L1 run's wall time.", ""]  # fmt: skip
        out += _table(["comparison", "condition", "RLE - L1", "seeds", "spread", "verdict"], rows)
        out.append("")
        if budget:
            budget_labels = _condition_labels(_conditions(budget))
            for c in _conditions(budget):
                out += [f"Budget {budget_labels[c]}:", ""] + _arm_table(budget, c) + [""]
        if noise:
            for c in _conditions(noise):
                out += [f"Noise {noise_labels[c]}:", ""] + _arm_table(noise, c) + [""]
        if steps_rows:
            plt, fig, axes = _figure(2)
            _plot_diffs(axes[0], [x[0] for x in xs], steps_rows, "training steps (equal steps)")
            wx = [x[1] for x in xs]
            kept = [(w, row) for w, row in zip(wx, wall_rows, strict=True) if row[1].diff.n]
            _plot_diffs(axes[1], [w for w, _ in kept], [row for _, row in kept],
                        "wall time compared at, s (equal wall time)")  # fmt: skip
            path = image_dir / "sweep_budget.png"
            _save(plt, fig, path)
            out += [f"![RLE - L1 vs budget]({_rel(path, out_md)})", ""]
        if noise_rows:
            plt, fig, axes = _figure(1, max(6.0, 2.4 * len(noise_rows)))
            _plot_diffs(axes[0], None, noise_rows, "label noise", categorical=True)
            path = image_dir / "sweep_noise.png"
            _save(plt, fig, path)
            out += [f"![RLE - L1 vs noise]({_rel(path, out_md)})", ""]
        sentence = regime_sentence({"equal steps": steps_rows, "equal wall time": wall_rows, "noise": noise_rows})  # fmt: skip
        out += [f"**Regime.** {sentence}", ""]
    out += _decomposition_section(results)
    for group, title in (("pretrained", "Heatmap-pretrained backbone"),
                         ("convention", "`official` vs `paper` RLE conventions")):  # fmt: skip
        runs = _group(results, group)
        out += [f"### {title}", ""]
        if not runs:
            out += ["Not in this profile.", ""]
            continue
        out += _arm_table(runs) + [""]
        arms = _arms(runs)
        ref = "rle" if "rle" in arms else arms[0]
        rows = [_comparison_row(runs, a, ref, "ap_clean") for a in arms if a != ref]
        if rows:
            out += _table(_CMP_HEADER, rows) + [""]
    return out, sentence


def _calibration_section(results: dict, out_md: Path, image_dir: Path) -> list[str]:
    out = ["## 3. Confidence and calibration (Tab. 6 and beyond)", ""]
    runs = _group(results, "ablation")
    if not runs:
        return out + ["Not in this profile.", ""]
    header = ["arm", "Pearson conf-OKS", "Spearman conf-OKS", "keypoint AUROC (miss)"]
    header += [f"coverage {p}" for p in REPORT_LEVELS]
    rows = []
    curves = {}
    for arm in _arms(runs):
        mine = [r for r in runs if r["arm"] == arm]
        cells = [_label(arm)] + [spread(_metric(r, k) for r in mine).fmt()
                                 for k in ("conf_oks_pearson", "conf_oks_spearman", "kpt_auroc_miss")]  # fmt: skip
        for p in REPORT_LEVELS:
            vals = [((r["metrics"].get("coverage") or {}).get(p)) for r in mine]
            cells.append(spread(v for v in vals if _finite(v)).fmt())
        rows.append(cells)
        rel = [np.asarray(r["metrics"]["reliability"], dtype=np.float64) for r in mine
               if r.get("metrics", {}).get("reliability")]  # fmt: skip
        if rel and all(x.shape == rel[0].shape for x in rel):
            stack = np.stack(rel)  # (seeds, levels, 2)
            curves[arm] = (stack[0, :, 0], stack[:, :, 1].mean(0), stack[:, :, 1].std(0))
    out += _table(header, rows) + [""]
    out += ["Coverage: the fraction of clean-truth points inside the predicted p-region (the "
            "learned density scaled by sigma); a calibrated predictor gives p. '-': the arm has "
            "no density.", ""]  # fmt: skip
    if curves:
        plt, fig, axes = _figure(1, 5.0)
        ax = axes[0]
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="calibrated")
        for arm, (p, obs, sd) in curves.items():
            ax.errorbar(p, obs, yerr=sd, marker=".", capsize=2, label=_label(arm))
        ax.set_xlabel("nominal level p")
        ax.set_ylabel("observed coverage")
        ax.legend(fontsize=7)
        path = image_dir / "reliability.png"
        _save(plt, fig, path)
        out += [f"![reliability diagram]({_rel(path, out_md)})", ""]
    return out


def _flow_section(results: dict) -> tuple[list[str], dict[str, Comparison | None]]:
    out = ["## 4. Flow ablation (Tab. 11) and the log s normalizer (Tab. 17)", ""]
    claims: dict[str, Comparison | None] = {}
    flow = _group(results, "flow")
    out += ["### Flow depth and width", ""]
    if not flow:
        out += ["Not in this profile.", ""]
    else:
        out += _arm_table(flow) + [""]
        arms = _arms(flow)
        means = {a: spread(_by_seed(flow, a, "ap_clean").values()).mean for a in arms}
        finite = [a for a in arms if math.isfinite(means[a])]
        if len(finite) >= 2:
            hi, lo = max(finite, key=means.get), min(finite, key=means.get)  # type: ignore[arg-type]
            out += _table(_CMP_HEADER, [_comparison_row(flow, hi, lo, "ap_clean")]) + [""]
            claims["flow"] = compare(_by_seed(flow, hi, "ap_clean"), _by_seed(flow, lo, "ap_clean"))
    log_s = _group(results, "log_s")
    out += ["### log s on/off", ""]
    if not log_s:
        out += ["Not in this profile.", ""]
    else:
        out += _arm_table(log_s) + [""]
        arms = _arms(log_s)
        if len(arms) == 2:
            on = [a for a in arms if "log_s" in a]
            a, b = (on[0], next(x for x in arms if x != on[0])) if on else (arms[0], arms[1])
            out += _table(_CMP_HEADER, [_comparison_row(log_s, a, b, k) for k in ("ap_noisy", "ap_clean")]) + [""]  # fmt: skip
            claims["log_s"] = compare(
                _by_seed(log_s, a, "ap_clean"), _by_seed(log_s, b, "ap_clean")
            )
    return out, claims


def _cost_section(results: dict) -> tuple[list[str], dict[str, float]]:
    out = ["## 6. Cost (Tab. 2a, 6)", ""]
    cost = results.get("cost")
    ratios: dict[str, float] = {}
    if not cost:
        return out + ["Not in this profile.", ""], ratios
    heads = cost.get("heads")
    if heads:
        size = heads.get("input_size", ["?", "?"])
        out.append(f"Input {size[0]}x{size[1]}, batch 1, {heads.get('threads', '?')} thread(s), "
                   f"median of {heads.get('rounds', '?')} rounds.")  # fmt: skip
        out.append("")
        rows = []
        for r in heads.get("rows", []):
            onnx = r.get("onnx_ms")
            rows.append([r["backbone"], r["head"], f"{r['params_m']:.2f}", f"{r['gflops']:.2f}",
                         f"{r['gflops'] / 2:.2f}", f"{r['eager_ms']:.1f}",
                         f"{onnx:.1f}" if _finite(onnx) else "-"])  # fmt: skip
        out += _table(["backbone", "head", "params (M)", "GFLOPs", "GMACs", "eager ms",
                       "ONNX Runtime ms"], rows) + [""]  # fmt: skip
        by = {(r["backbone"], r["head"]): r for r in heads.get("rows", [])}
        for bb in dict.fromkeys(r["backbone"] for r in heads.get("rows", [])):
            if (bb, "regression") in by and (bb, "heatmap") in by:
                reg, hm = by[(bb, "regression")], by[(bb, "heatmap")]
                ratios[bb] = reg["gflops"] / hm["gflops"]
                out.append(f"- {bb}: regression / heatmap FLOPs {ratios[bb]:.3f}, latency "
                           f"{reg['eager_ms'] / hm['eager_ms']:.3f} (eager)")  # fmt: skip
        out.append("")
    over = cost.get("rle_overhead")
    if over:
        rows = []
        for r in over.get("rows", []):
            lo_hi = r.get("overhead_range")
            rng = f"{lo_hi[0]:+.1%} to {lo_hi[1]:+.1%}" if lo_hi else "-"
            rows.append([r["model"], f"{r['l1_s_per_step']:.4f}", f"{r['rle_s_per_step']:.4f}",
                         f"{r['overhead']:+.1%}", rng])  # fmt: skip
        out += [f"RLE-over-L1 train-step overhead ({over.get('threads', '?')} thread(s), "
                f"{over.get('rounds', '?')} rounds; RLE / L1 - 1 taken within each round, its "
                "median and range over the rounds):", ""]  # fmt: skip
        out += _table(["model", "L1 s/step", "RLE s/step", "RLE / L1 - 1", "range over rounds"], rows)  # fmt: skip
        out += [""]
    return out, ratios


def _disagreements(
    ablation: dict[str, Comparison],
    results: dict,
    flow: dict[str, Comparison | None],
    density: dict[str, float],
    flops: dict[str, float],
) -> list[str]:
    out = ["## Disagreements with the paper", ""]
    rows: list[list[str]] = []

    def verdict_of(c: Comparison, expect: str) -> str:
        if c.verdict == "n/a":
            return "not measured (< 2 seeds)"
        if expect == "tie":
            return "agrees" if c.verdict == "tie" else "disagrees"
        return {"win": "agrees", "tie": "disagrees (a tie)", "loss": "disagrees (reversed)"}[c.verdict]  # fmt: skip

    for lo, hi in zip(PAPER_ORDER, PAPER_ORDER[1:], strict=False):
        c = ablation.get(f"{hi}>{lo}")
        if c is not None:
            rows.append([f"{_label(hi)} beats {_label(lo)} (Tab. 1, 7)",
                         f"AP vs clean {c.diff.fmt(3, signed=True)}", verdict_of(c, "win")])  # fmt: skip
    for key, claim, expect in (
        ("rle-l1", "RLE beats L1 (Tab. 1)", "win"),
        ("rle-rle_gaussian", "Laplace Q beats Gaussian Q (Tab. 7)", "win"),
    ):
        c = ablation.get(key)
        if c is not None:
            rows.append([claim, f"AP vs clean {c.diff.fmt(3, signed=True)}", verdict_of(c, expect)])
    c = ablation.get("rle-heatmap")
    if c is not None:
        v = "agrees" if c.verdict in ("tie", "win") else verdict_of(c, "tie")
        rows.append(["RLE reaches heatmap accuracy (Tab. 2)",
                     f"RLE - heatmap, AP vs clean {c.diff.fmt(3, signed=True)}", v])  # fmt: skip
    runs = _group(results, "ablation")
    if {"rle", "heatmap"} <= set(_arms(runs)):
        c = compare(_by_seed(runs, "rle", "conf_oks_pearson"),
                    _by_seed(runs, "heatmap", "conf_oks_pearson"))  # fmt: skip
        rows.append(["RLE's confidence ranks predictions better than the heatmap maximum (Tab. 6)",
                     f"Pearson(conf, OKS) RLE - heatmap {c.diff.fmt(3, signed=True)}",
                     verdict_of(c, "win")])  # fmt: skip
    if density:
        k = density["excess_kurtosis"]
        rows.append(["The flow learns a density between a Gaussian and a Laplace (Fig. 4)",
                     f"excess kurtosis {k:.2f} (Gaussian 0, Laplace 3)",
                     density_verdict(k)])  # fmt: skip
    if flow.get("flow") is not None:
        c = flow["flow"]
        rows.append(["The flow's size hardly matters (Tab. 11)",
                     f"best - worst flow, AP vs clean {c.diff.fmt(3, signed=True)}",  # type: ignore[union-attr]
                     verdict_of(c, "tie")])  # type: ignore[arg-type]  # fmt: skip
    if flow.get("log_s") is not None:
        c = flow["log_s"]
        rows.append(["log s barely changes AP (Tab. 17)",
                     f"on - off, AP vs clean {c.diff.fmt(3, signed=True)}",  # type: ignore[union-attr]
                     verdict_of(c, "tie")])  # type: ignore[arg-type]  # fmt: skip
    for bb, r in flops.items():
        rows.append([f"Regression needs under half the heatmap model's FLOPs (Tab. 2a: 4.0 vs 9.7 GMACs, 0.41, ResNet-50), {bb}",
                     f"FLOPs ratio {r:.3f}", "agrees" if r < 0.5 else "disagrees"])  # fmt: skip
    if not rows:
        return out + ["No paper claim is measured by this profile.", ""]
    out += _table(["paper's claim", "found", "verdict"], rows)
    n = sum(1 for r in rows if r[2].startswith("disagrees"))
    out += ["", f"{n} of {len(rows)} measured claims disagree with the paper.", ""]
    return out


# --------------------------------------------------------------------------- issue 19: sigma
def residual_over_sigma(pred: dict[str, np.ndarray]) -> np.ndarray:
    """Per keypoint, the mean over its visible instances and the 2 axes of |truth - mu| / sigma
    from a ``predictions.npz`` dict: (K,), NaN for a keypoint never visible.

    For a Laplace of scale sigma per axis E|truth - mu| / sigma = 1: 1 is calibrated for the
    Laplace NLL; above 1 sigma understates the error, below 1 it overstates it.
    """
    if "sigma" not in pred:
        raise ValueError("predictions.npz has no sigma (a head without a density)")
    ratio = np.abs(pred["truth_clean"] - pred["keypoints"]) / np.maximum(pred["sigma"], 1e-12)
    ratio = ratio.mean(-1)  # (N, K): mean over the axes
    vis = pred["visible"].astype(bool)  # (N, K)
    count = vis.sum(0)
    total = np.where(vis, ratio, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _run_density_moments(run: dict) -> dict[str, float] | str:
    """The learned density's moments of an RLE/DLE run from its checkpoint, or why not."""
    from posereg.losses import DLELoss, RLELoss
    from posereg.models.build import model_from_checkpoint

    ckpt = _run_file(run, "best.pt") or _run_file(run, "last.pt")
    if ckpt is None:
        return "no checkpoint"
    model, _, _ = model_from_checkpoint(ckpt)
    criterion = getattr(model, "criterion", None)
    if not isinstance(criterion, DLELoss | RLELoss):
        return "no learned density"
    return learned_density_moments(criterion)


def _keypoint_names(run: dict, k: int) -> list[str]:
    try:
        cfg = _run_config(run)
        if cfg is not None:
            from posereg.models.build import data_skeleton

            names = list(data_skeleton(cfg).keypoint_names)
            if len(names) == k:
                return names
    except (OSError, ValueError, KeyError):
        pass
    return [str(i) for i in range(k)]


def _sigma_section(results: dict) -> list[str]:
    """Issue 19 item 2 (2D), group ``sigma``: what sigma means per arm."""
    runs = _group(results, "sigma")
    if not runs:
        return []
    out = ["## What sigma means (issue 19, group `sigma`)", ""]
    header = ["arm", "seeds", "AP clean", "AP labels", "error / sqrt(area)", "mean |r| / sigma",
              "Pearson conf-OKS", "keypoint AUROC (miss)", "coverage 0.9",
              "excess kurtosis"]  # fmt: skip
    rows, per_keypoint, notes = [], {}, set()
    names: list[str] = []
    for arm in _arms(runs):
        mine = [r for r in runs if r["arm"] == arm]
        ratios, kurt = [], []
        for r in mine:
            npz = _run_file(r, "predictions.npz")
            if npz is not None:
                pred = _load_npz(npz)
                if "sigma" in pred:
                    ratios.append(residual_over_sigma(pred))
                    names = names or _keypoint_names(r, len(ratios[-1]))
            if arm.startswith("rle"):
                try:
                    m = _run_density_moments(r)
                except (OSError, ValueError, KeyError, RuntimeError) as e:
                    m = f"{e}"
                if isinstance(m, str):
                    notes.add(f"{_label(arm)} seed {r['seed']}: {m}")
                else:
                    kurt.append(m["excess_kurtosis"])
        if ratios:
            per_keypoint[arm] = np.stack(ratios)  # (seeds, K)
        cov = [(r["metrics"].get("coverage") or {}).get("0.9") for r in mine]
        rows.append([
            _label(arm), str(len(mine)),
            spread(_metric(r, "ap_clean") for r in mine).fmt(),
            spread(_metric(r, "ap_noisy") for r in mine).fmt(),
            spread(_metric(r, "err_sqrt_area") for r in mine).fmt(4),
            spread(float(np.nanmean(x)) for x in ratios).fmt(),
            spread(_metric(r, "conf_oks_pearson") for r in mine).fmt(),
            spread(_metric(r, "kpt_auroc_miss") for r in mine).fmt(),
            spread(v for v in cov if _finite(v)).fmt(),
            spread(kurt).fmt(2),
        ])  # fmt: skip
    out += _table(header, rows) + [""]
    out += [
        "Mean ± std over seeds. AP clean / AP labels: COCO OKS AP against the clean truth and "
        "against the noisy labels; error / sqrt(area): mean keypoint error against the clean "
        "truth. mean |r| / sigma: per keypoint the mean over its visible instances and both axes "
        "of |truth - mu| / sigma (clean truth), then the mean over keypoints; 1 is calibrated "
        "for a Laplace of scale sigma, below 1 sigma overstates the error. Pearson conf-OKS: the "
        "instance score against the OKS to the truth (Tab. 6); keypoint AUROC: the keypoint "
        "confidence flagging misses (error > 0.1 sqrt(area)); coverage 0.9: the share of "
        "truth points inside the 90 % region of the loss's learned density (0.9 is calibrated). "
        "Excess kurtosis: the learned density's marginal of bar_mu along x, from the checkpoint "
        "(Gaussian 0, Laplace 3; RLE arms only: G_phi in the official convention, Q G_phi / s "
        "with log s). '-': not defined for the arm (L1 trains no sigma).",
        "",
    ]
    if per_keypoint:
        arms = list(per_keypoint)
        k = len(names)
        kp_rows = []
        for j in range(k):
            kp_rows.append([names[j]] + [spread(per_keypoint[a][:, j]).fmt() for a in arms])
        out += ["mean |r| / sigma per keypoint (mean ± std over seeds):", ""]
        out += _table(["keypoint"] + [_label(a) for a in arms], kp_rows) + [""]
    if notes:
        out += ["Left out: " + "; ".join(sorted(notes)) + ".", ""]
    return out


def _generic_groups(results: dict) -> list[str]:
    out = []
    for group in dict.fromkeys(r.get("group") for r in results.get("runs", [])):
        if group in GROUPS:
            continue
        runs = _group(results, group)
        out += [f"## Other runs: group `{group}`", ""] + _arm_table(runs) + [""]
    return out


def write_report(results: dict, out_md: Path, image_dir: Path) -> None:
    """Write the Markdown report of a bench run and its plots.

    Arguments:
        results: the ``results.json`` dict (docs/bench.md).
        out_md: the Markdown file to write (e.g. ``docs/results.md``).
        image_dir: where the PNG plots go; the Markdown links them by relative path.
    """
    out_md, image_dir = Path(out_md), Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    lines = _head(results)
    ablation_lines, ablation_claims = _ablation_section(results)
    sweep_lines, _ = _sweep_section(results, out_md, image_dir)
    calib = _calibration_section(results, out_md, image_dir)
    flow_lines, flow_claims = _flow_section(results)
    density_lines, density = _density_section(results, out_md, image_dir)
    cost_lines, flops = _cost_section(results)
    lines += ablation_lines + sweep_lines + calib + flow_lines + density_lines + cost_lines
    lines += _sigma_section(results)
    lines += _generic_groups(results)
    lines += _disagreements(ablation_claims, results, flow_claims, density, flops)
    out_md.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
