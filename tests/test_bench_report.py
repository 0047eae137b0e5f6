"""posereg.bench.report: aggregation over seeds, the tie rule, the regime sentence, plots."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from posereg.bench.report import (
    Comparison,
    compare,
    learned_marginal,
    normalized_residuals,
    regime_sentence,
    spread,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1, 2)


def run(group: str, arm: str, seed: int, ap: float, params: dict | None = None, **extra) -> dict:
    metrics = {
        "ap_noisy": ap - 0.05,
        "ap_clean": ap,
        "pck_0.1": 0.5,
        "err_sqrt_area": 0.1,
        "conf_oks_pearson": extra.pop("pearson", 0.3),
        "conf_oks_spearman": 0.3,
        "kpt_auroc_miss": 0.7,
        "coverage": extra.pop("coverage", None),
        "reliability": extra.pop("reliability", None),
        "ap_clean_const_score": ap - 0.01,
    }
    return {
        "key": f"{group}-{arm}-{seed}-{params}",
        "arm": arm,
        "group": group,
        "seed": seed,
        "params": params or {},
        "run_dir": "/nonexistent",
        "wall_s": extra.pop("wall_s", 100.0),
        "train_img_per_s": 500.0,
        "steps": extra.pop("steps", 1000),
        "metrics": metrics,
    }


def results_with(runs: list[dict], cost: dict | None = None) -> dict:
    return {
        "profile": "quick",
        "command": "posereg bench quick --jobs 2",
        "commit": "abc1234",
        "seeds": list(SEEDS),
        "started": "2025-01-01T10:00:00",
        "finished": "2025-01-01T11:00:00",
        "wall_s": 3600.0,
        "machine": {"cpus": 2, "torch": "2.5", "python": "3.11"},
        "runs": runs,
        "cost": cost,
    }


def ablation_runs() -> list[dict]:
    """l1: AP 0.20/0.22/0.24 (mean 0.22, std 0.02); rle: +0.10 on each seed (a win);
    heatmap: rle + 0.005 on each seed (below the spread 0.02: a tie)."""
    cov = {"0.5": 0.5, "0.8": 0.78, "0.9": 0.88, "0.95": 0.94}
    rel = [[p, p - 0.02] for p in (0.05, 0.5, 0.95)]
    runs = []
    for s, base in zip(SEEDS, (0.20, 0.22, 0.24), strict=True):
        runs.append(run("ablation", "l1", s, base))
        runs.append(run("ablation", "rle", s, base + 0.10, coverage=cov, reliability=rel))
        runs.append(run("ablation", "heatmap", s, base + 0.105, pearson=0.1))
    return runs


def test_spread_is_mean_and_sample_std():
    s = spread([0.20, 0.22, 0.24])
    assert s.mean == pytest.approx(0.22)
    assert s.std == pytest.approx(0.02)
    assert s.fmt() == "0.220 ± 0.020"
    assert spread([0.3]).fmt() == "0.300 (1 seed)"
    assert spread([]).fmt() == "-"


def test_tie_rule_difference_below_spread_is_tie_above_is_win():
    a = {0: 0.20, 1: 0.22, 2: 0.24}
    assert compare({s: v + 0.10 for s, v in a.items()}, a).verdict == "win"
    assert compare(a, {s: v + 0.10 for s, v in a.items()}).verdict == "loss"
    # paired differences all +0.005 (std 0) but each arm's std is 0.02: a tie
    tie = compare({s: v + 0.005 for s, v in a.items()}, a)
    assert tie.verdict == "tie" and tie.threshold == pytest.approx(0.02)
    # lower is better (errors): a negative difference is a win
    assert compare({0: 0.1, 1: 0.1}, {0: 0.5, 1: 0.51}, higher_is_better=False).verdict == "win"
    assert compare({0: 0.3}, {0: 0.1}).verdict == "n/a"  # one seed: no spread


def test_report_ablation_table_means_stds_and_ties(tmp_path: Path):
    md, img = tmp_path / "docs" / "results.md", tmp_path / "docs" / "images"
    write_report(results_with(ablation_runs()), md, img)
    text = md.read_text()
    assert text.startswith("# posereg bench: profile `quick`")
    assert "posereg bench quick --jobs 2" in text and "`abc1234`" in text
    assert "seeds: 0, 1, 2" in text and "60.0 min" in text
    rows: dict[str, str] = {}  # the first table row of each label: the ablation table
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split("|")[1].strip(), line)
    # | arm | seeds | AP vs labels | AP vs clean | ...
    l1 = [c.strip() for c in rows["L1"].split("|")[1:-1]]
    assert l1[1] == "3" and l1[2] == "0.170 ± 0.020" and l1[3] == "0.220 ± 0.020"
    rle = [c.strip() for c in rows["RLE (Laplace Q)"].split("|")[1:-1]]
    assert rle[3] == "0.320 ± 0.020"
    # RLE - L1: +0.100 paired, beyond the spread; RLE - heatmap: -0.005, a tie
    cmp_lines = [ln for ln in text.splitlines() if ln.startswith("| RLE (Laplace Q) - ")]
    l1_line = next(ln for ln in cmp_lines if "- L1 | ap_clean" in ln)
    assert "+0.100 ± 0.000" in l1_line and "RLE (Laplace Q) better" in l1_line
    hm_line = next(ln for ln in cmp_lines if "- Heatmap | ap_clean" in ln)
    assert "-0.005 ± 0.000" in hm_line and hm_line.rstrip(" |").endswith("tie")
    assert "L1 < RLE (Laplace Q) ≈ Heatmap" in text
    # calibration table and the reliability diagram
    cal = next(ln for ln in text.splitlines() if ln.startswith("| RLE (Laplace Q) | 0.300"))
    assert "0.780 ± 0.000" in cal
    assert (img / "reliability.png").read_bytes()[:8] == PNG_MAGIC
    assert "](images/reliability.png)" in text
    # groups this profile lacks say so
    for title in ("### Flow depth and width", "### log s on/off", "## 6. Cost (Tab. 2a, 6)"):
        after = text.split(title, 1)[1].strip().splitlines()[0]
        assert after == "Not in this profile."
    assert "Budget and noise sweeps: not in this profile." in text
    assert "## 5. The learned density (Fig. 4)\n\nNot in this profile" in text
    # disagreements: RLE beats L1 agrees, RLE's confidence beats the heatmap's agrees here
    dis = text.split("## Disagreements with the paper", 1)[1]
    assert re.search(r"\| RLE beats L1 \(Tab\. 1\) \| [^|]+ \| agrees \|", dis)
    assert "RLE reaches heatmap accuracy (Tab. 2)" in dis


def sweep_runs(rle_gain: dict[str, float]) -> list[dict]:
    """Budget group: L1 at budgets 2/6/18 with AP 0.1/0.2/0.3 + seed jitter; RLE = L1 + gain."""
    runs = []
    for budget, steps, ap in (("2", 200, 0.1), ("6", 600, 0.2), ("18", 1800, 0.3)):
        for s in SEEDS:
            jitter = 0.01 * s
            p = {"budget": budget}
            runs.append(run("budget", "l1", s, ap + jitter, p, steps=steps, wall_s=steps * 0.95))
            runs.append(
                run(
                    "budget", "rle", s, ap + jitter + rle_gain[budget], p, steps=steps, wall_s=steps
                )
            )
    return runs


def test_regime_sentence_rle_wins_only_at_small_budget(tmp_path: Path):
    md, img = tmp_path / "r.md", tmp_path / "img"
    write_report(results_with(sweep_runs({"2": 0.1, "6": 0.005, "18": -0.002})), md, img)
    text = md.read_text()
    sentence = next(ln for ln in text.splitlines() if ln.startswith("**Regime.**"))
    assert "at equal steps only at 2 (not at 6: tie, 18: tie)" in sentence
    assert "No regime" not in sentence
    # equal wall time: RLE's 18-budget wall time (1800 s) is beyond L1's longest run (1710 s),
    # so RLE's AP is read off its own curve (linear in log wall time) at L1's 1710 s
    t = math.log(1710 / 600) / math.log(1800 / 600)
    rle_at = (0.2 + 0.005) + t * ((0.3 - 0.002) - (0.2 + 0.005))
    assert f"| equal wall time | 18 | {rle_at - 0.3:+.3f} ± 0.000 | 3 | 0.010 | tie |" in text
    assert "| equal wall time | 2 | +0.095 ± 0.000 | 3 | 0.010 | RLE better |" in text
    assert (img / "sweep_budget.png").read_bytes()[:8] == PNG_MAGIC
    assert "](img/sweep_budget.png)" in text


def test_regime_sentence_when_rle_never_wins():
    a = {0: 0.20, 1: 0.22, 2: 0.24}
    tie = compare({s: v + 0.001 for s, v in a.items()}, a)
    loss = compare({s: v - 0.1 for s, v in a.items()}, a)
    sentence = regime_sentence(
        {"equal steps": [("2", tie), ("18", loss)], "noise": [("clean", tie)]}
    )
    assert sentence.startswith("No regime where RLE beats L1")
    assert "2: tie, 18: L1 better" in sentence and "clean: tie" in sentence


def test_regime_sentence_every_point_and_equal_wall_time():
    a = {0: 0.20, 1: 0.22, 2: 0.24}
    win: Comparison = compare({s: v + 0.1 for s, v in a.items()}, a)
    s = regime_sentence({"equal steps": [("2", win), ("6", win)], "equal wall time": [("2", win)]})
    assert "at every equal steps point (2, 6)" in s and "at every equal wall time point (2)" in s


def test_noise_plot_and_cost_table(tmp_path: Path):
    runs = []
    for noise, gain in (("clean", 0.0), ("coco", 0.01), ("2x", 0.1)):
        for s in SEEDS:
            runs.append(run("noise", "l1", s, 0.2 + 0.02 * s, {"noise": noise}))
            runs.append(run("noise", "rle", s, 0.2 + 0.02 * s + gain, {"noise": noise}))
    cost = {
        "heads": {
            "input_size": [256, 192],
            "threads": 1,
            "rounds": 7,
            "rows": [
                {"backbone": "resnet50", "head": "regression", "params_m": 23.5, "gflops": 8.2,
                 "eager_ms": 40.0, "onnx_ms": 30.0},
                {"backbone": "resnet50", "head": "heatmap", "params_m": 34.0, "gflops": 18.0,
                 "eager_ms": 90.0, "onnx_ms": None},
            ],
        },
        "rle_overhead": {"threads": 1, "rows": [
            {"model": "main", "l1_s_per_step": 0.1, "rle_s_per_step": 0.105, "overhead": 0.05,
             "overhead_range": [-0.02, 0.11]}]},
    }  # fmt: skip
    md, img = tmp_path / "r.md", tmp_path / "img"
    write_report(results_with(runs, cost), md, img)
    text = md.read_text()
    assert (img / "sweep_noise.png").read_bytes()[:8] == PNG_MAGIC
    sentence = next(ln for ln in text.splitlines() if ln.startswith("**Regime.**"))
    assert "at noise only at 2x (not at clean: tie, coco: tie)" in sentence
    assert "regression / heatmap FLOPs 0.456" in text
    assert "| main | 0.1000 | 0.1050 | +5.0% | -2.0% to +11.0% |" in text
    assert "| resnet50 | heatmap | 34.00 | 18.00 | 9.00 | 90.0 | - |" in text


def test_learned_marginal_of_an_untrained_dle_flow_is_the_standard_normal():
    """A RealNVP with zero weights and biases is the identity: G = N(0, I), so the marginal
    along x is the standard normal pdf for DLE and for RLE without log s (the flow itself is the
    learned law), and exp(-|x|) N(x) normalized for paper-convention RLE with log s (Q G / s)."""
    import torch

    from posereg.losses import DLELoss, RLELoss

    def identity_flow(criterion):
        with torch.no_grad():
            for p in criterion.flow.parameters():
                p.zero_()
        return criterion

    x = np.linspace(-4, 4, 81)
    p = learned_marginal(identity_flow(DLELoss(dim=2, flow=None)), x)
    assert np.allclose(p, np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi), atol=5e-3)
    for convention in ("official", "paper"):
        g = learned_marginal(identity_flow(RLELoss(dim=2, convention=convention)), x)
        assert np.allclose(g, np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi), atol=5e-3), convention
    # paper-convention RLE with log s, Laplace Q: density proportional to exp(-|x|) N(x; 0, 1)
    q = learned_marginal(identity_flow(RLELoss(dim=2, convention="paper", log_s=True)), x)
    ref = np.exp(-np.abs(x) - 0.5 * x**2)
    ref /= ref.sum() * (x[1] - x[0])
    assert np.allclose(q, ref, atol=1e-2)
    assert q.sum() * (x[1] - x[0]) == pytest.approx(1.0, abs=0.01)


def test_normalized_residuals_sign_follows_the_convention():
    pred = {
        "keypoints": np.array([[[10.0, 0.0], [0.0, 0.0]]]),
        "truth_clean": np.array([[[14.0, 0.0], [5.0, 0.0]]]),
        "sigma": np.array([[[2.0, 1.0], [1.0, 1.0]]]),
        "visible": np.array([[True, False]]),
    }
    assert normalized_residuals(pred, "paper").tolist() == [2.0]
    assert normalized_residuals(pred, "official").tolist() == [-2.0]
    with pytest.raises(ValueError, match="no sigma"):
        normalized_residuals({k: v for k, v in pred.items() if k != "sigma"})


def _write_run(run_dir: Path, val_ann: Path, pred: dict, checkpoint: bool = False) -> None:
    import dataclasses

    from posereg.config import Config, save_yaml

    run_dir.mkdir(parents=True)
    cfg = Config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_ann=str(val_ann)))
    save_yaml(cfg, run_dir / "config.yaml")
    np.savez(run_dir / "predictions.npz", **pred)
    if checkpoint:
        from _real_data import tiny_checkpoint

        tiny_checkpoint(run_dir / "last.pt")


def _files_case(tmp_path: Path) -> tuple[dict, dict]:
    """4 images, one person each; instances 0, 1 predicted exactly, 2, 3 far off. L1 scores the
    bad ones highest, RLE the good ones; both predict the same keypoints."""
    import json

    rng = np.random.default_rng(0)
    n, k = 4, 17
    truth = rng.uniform(40, 160, size=(n, k, 2))
    images, anns = [], []
    for i in range(n):
        kp = np.concatenate([truth[i], np.full((k, 1), 2.0)], -1).ravel().tolist()
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 200, "height": 200})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [20, 20, 160, 160],
                     "area": 16000.0, "iscrowd": 0, "num_keypoints": k, "keypoints": kp,
                     "keypoints_clean": kp})  # fmt: skip
    val = tmp_path / "val.json"
    val.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": [{"id": 1, "name": "person"}]}))  # fmt: skip
    keypoints = truth.copy()
    keypoints[2:] += 60.0  # far off: OKS ~ 0
    common = {
        "keypoints": keypoints,
        "keypoint_conf": np.full((n, k), 0.5),
        "truth_clean": truth,
        "visible": np.ones((n, k), bool),
        "area": np.full(n, 16000.0),
        "image_id": np.arange(1, n + 1),
        "ann_id": np.arange(1, n + 1),
    }
    l1 = dict(common, instance_score=np.array([0.1, 0.2, 0.9, 0.8]))
    sigma = np.full((n, k, 2), 4.0)
    rle = dict(common, instance_score=np.array([0.9, 0.8, 0.1, 0.2]), sigma=sigma)
    rle = {key: rle[key][::-1] for key in rle}  # another instance order: aligned by ann_id
    runs = []
    for arm, pred in (("l1", l1), ("rle", rle)):
        d = tmp_path / "runs" / arm
        _write_run(d, val, pred, checkpoint=arm == "rle")
        r = run("ablation", arm, 0, 0.5)
        r["run_dir"] = str(d)
        runs.append(r)
    return runs[0], runs[1]


def test_score_decomposition_and_learned_density_from_run_files(tmp_path: Path):
    from posereg.bench.report import score_decomposition

    l1, rle = _files_case(tmp_path)
    d = score_decomposition(l1, rle)
    assert isinstance(d, dict), d
    # same keypoints: the whole gap is the instance score; constant scores give equal AP
    assert d["rle"] == pytest.approx(d["l1_rle_score"])
    assert d["rle_const"] == pytest.approx(d["l1_const"])
    assert d["l1_rle_score"] > d["l1"] + 0.1
    md, img = tmp_path / "docs" / "results.md", tmp_path / "docs" / "img"
    write_report(results_with([l1, rle]), md, img)
    text = md.read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| ablation |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[7] == "+0.000 (1 seed)"  # location part
    assert float(cells[6].split()[0]) == pytest.approx(d["l1_rle_score"] - d["l1"], abs=1e-3)
    assert (img / "learned_density.png").read_bytes()[:8] == PNG_MAGIC
    assert "](img/learned_density.png)" in text and "excess kurtosis" in text
    assert "The flow learns a density between a Gaussian and a Laplace (Fig. 4)" in text
    # a missing predictions file is said, not a traceback
    (Path(l1["run_dir"]) / "predictions.npz").unlink()
    assert score_decomposition(l1, rle) == "predictions.npz missing"


def test_learned_density_moments_follow_the_densitys_own_scale(tmp_path):
    """A flow whose density is N(0, 0.02^2 I) (identity couplings, prior scale 0.02): far
    narrower than one sigma unit, as trained official-convention flows are. The plot's grid
    must follow that scale: std 0.02 and excess kurtosis 0 (a fixed grid of 0.05 cells cannot)."""
    import torch

    from posereg.bench.report import plot_learned_density
    from posereg.losses import DLELoss

    crit = DLELoss(dim=2, flow=None)
    with torch.no_grad():
        for p in crit.flow.parameters():
            p.zero_()
        crit.flow.prior_scale.fill_(0.02)
    stats = plot_learned_density(
        crit, np.random.default_rng(0).normal(0, 0.02, 500), tmp_path / "d.png"
    )
    assert stats["std"] == pytest.approx(0.02, rel=0.01)
    assert abs(stats["excess_kurtosis"]) < 0.05
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_density_verdict_needs_a_kurtosis_clearly_between_the_two_laws():
    from posereg.bench.report import density_verdict

    assert density_verdict(1.5) == "agrees"
    assert density_verdict(0.07) == "disagrees (Gaussian-like)"
    assert density_verdict(2.9) == "disagrees (Laplace-like)"
    assert density_verdict(4.0) == "disagrees (outside both)"


def test_condition_labels_name_only_what_differs():
    from posereg.bench.report import _condition, _condition_labels

    runs = [
        run("noise", "l1", 0, 0.1, {"noise": n, "noise_scale": sc, "num_train": 8000, "steps": 600})
        for n, sc in (("clean", 0.0), ("coco", 0.354), ("coco2x_outliers", 0.708))
    ]
    labels = _condition_labels([_condition(r) for r in runs])
    assert list(labels.values()) == [
        "noise=clean (noise_scale=0.0)",
        "noise=coco (noise_scale=0.354)",
        "noise=coco2x_outliers (noise_scale=0.708)",
    ]


def test_header_counts_runs_reused_from_before_the_profile_started(tmp_path: Path):
    runs = [run("ablation", arm, s, 0.1) for arm in ("l1", "rle") for s in SEEDS]
    for i, r in enumerate(runs):
        r["key"] = f"k{i}"
        r["timing"] = {"started": 0.0, "finished": 1000.0 if i < 2 else 3000.0}
    runs.append(dict(runs[0], group="budget"))  # one run listed under two groups
    results = results_with(runs) | {"started": "1970-01-01T00:33:20+00:00"}  # t = 2000 s
    md = tmp_path / "r.md"
    write_report(results, md, tmp_path / "img")
    assert (
        "- runs: 7 (6 distinct: 4 trained in this invocation, 2 reused from earlier ones)"
        in md.read_text()
    )


def _sigma_pred(ratio: float, seed: int) -> dict:
    """3 instances x 17 keypoints; every visible residual is ``ratio`` sigma on both axes (the
    left eye's twice that), and the unlabelled points are 100 sigma off (must not count)."""
    rng = np.random.default_rng(seed)
    n, k = 3, 17
    truth = rng.uniform(40, 160, size=(n, k, 2))
    sigma = rng.uniform(1.0, 5.0, size=(n, k, 2))
    scale = np.full((n, k, 1), ratio)
    scale[:, 1] *= 2.0  # left_eye
    visible = np.ones((n, k), bool)
    visible[0, 3] = False
    keypoints = truth - scale * sigma * rng.choice([-1.0, 1.0], size=(n, k, 2))
    keypoints[0, 3] = truth[0, 3] + 100 * sigma[0, 3]
    return {"keypoints": keypoints, "truth_clean": truth, "sigma": sigma, "visible": visible,
            "keypoint_conf": np.full((n, k), 0.5), "area": np.full(n, 16000.0)}  # fmt: skip


def test_sigma_section_reports_ratio_per_keypoint_coverage_and_kurtosis(tmp_path: Path):
    """Group ``sigma`` (issue 19): per arm mean ± std over seeds of the AP, the error, mean
    |truth - mu| / sigma from predictions.npz (per keypoint and its mean; unlabelled points
    left out), Pearson, AUROC, the 0.9 coverage, and the learned density's excess kurtosis from
    the RLE checkpoint (an untrained flow: G_phi ~ N(0, I), kurtosis ~ 0); a run without a
    checkpoint is named, not a traceback. (The checkpoint is on the paper-convention arm so that
    Fig. 4's section, which plots the ``rle`` arm's, does not run: 7 s of CPU saved.)"""
    from posereg.bench.report import residual_over_sigma

    val = tmp_path / "val.json"
    runs = []
    arms = (("rle", (0.3,)), ("rle_paper_log_s", (0.25,)), ("laplace_nll", (1.0, 0.5)),
            ("l1", (None, None)))  # fmt: skip
    for arm, ratios in arms:
        for seed, ratio in enumerate(ratios):
            d = tmp_path / "runs" / f"{arm}-{seed}"
            pred = _sigma_pred(ratio or 1.0, seed)
            if ratio is None:
                del pred["sigma"]  # L1 trains no sigma: the bench leaves it out
            _write_run(d, val, pred, checkpoint=arm == "rle_paper_log_s")
            cov = None if arm == "l1" else {"0.9": 0.8 + 0.05 * seed}
            r = run("sigma", arm, seed, 0.5 + 0.1 * seed, coverage=cov)
            r["run_dir"] = str(d)
            runs.append(r)
    per_keypoint = residual_over_sigma(_sigma_pred(0.5, 0))
    assert per_keypoint[0] == pytest.approx(0.5) and per_keypoint[1] == pytest.approx(1.0)
    assert per_keypoint[3] == pytest.approx(0.5)  # the 100-sigma unlabelled point left out
    md = tmp_path / "docs" / "results.md"
    write_report(results_with(runs), md, tmp_path / "docs" / "img")
    text = md.read_text()
    section = text.split("## What sigma means (issue 19, group `sigma`)")[1]
    assert "## Other runs: group `sigma`" not in text

    def cells(label: str) -> list[str]:
        row = next(ln for ln in section.splitlines() if ln.startswith(f"| {label} |"))
        return [c.strip() for c in row.split("|")[1:-1]]

    # mean over keypoints: 16 keypoints at r, the left eye at 2r -> r * 18 / 17
    laplace = cells("Laplace NLL")
    assert laplace[1] == "2" and laplace[2] == "0.550 ± 0.071"  # AP clean 0.5, 0.6
    m = 18 / 17 * np.array([1.0, 0.5])
    assert laplace[5] == f"{m.mean():.3f} ± {m.std(ddof=1):.3f}"
    assert laplace[8] == "0.825 ± 0.035" and laplace[9] == "-"  # coverage; no flow
    rle = cells("RLE (paper convention, with log s)")
    assert rle[5] == f"{0.25 * 18 / 17:.3f} (1 seed)"
    assert abs(float(rle[9].split()[0])) < 0.1  # N(0, I): excess kurtosis 0
    assert cells("RLE (Laplace Q)")[9] == "-"
    assert "Left out: RLE (Laplace Q) seed 0: no checkpoint." in section
    l1 = cells("L1")
    assert l1[5] == "-" and l1[8] == "-" and l1[9] == "-"
    # the per-keypoint table names the keypoints of the run's skeleton
    eye = cells("left_eye")
    assert eye[1] == f"{0.6:.3f} (1 seed)" and eye[3] == "1.500 ± 0.707"
