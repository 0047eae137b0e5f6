"""``posereg bench`` (issue 10): profiles, the run cache's keys, the scheduler's bookkeeping with
real ``posereg train`` subprocesses on the smoke profile, and the shared evaluation objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from posereg.bench.cache import IGNORED_KEYS, RunState, config_key
from posereg.bench.experiments import (
    COCO_NOISE_SCALE,
    METHODS,
    NOISE,
    PROFILES,
    base_config,
    estimate_seconds,
    get_profile,
)
from posereg.bench.runner import plan_runs
from posereg.config import apply_overrides, load_config, to_dict

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "posereg"


def _bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN), "bench", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def _one_line_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("posereg bench: error: "), out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# --------------------------------------------------------------------------- profiles (fast)
def test_base_config_is_the_main_jobs_recipe():
    """The bench's base is configs/synth_rle.yaml, up to what the runner sets per run."""
    shipped = to_dict(load_config(REPO / "configs" / "synth_rle.yaml"))
    ours = to_dict(base_config())
    for tree in (shipped, ours):
        tree.pop("name")
        for k in ("train_ann", "train_images", "val_ann", "val_images", "synth"):
            tree["data"].pop(k)
    assert ours == shipped


def test_quick_is_every_ablation_row_at_one_budget_with_three_seeds_and_fits_90_minutes():
    q = get_profile("quick")
    arms = {e.arm for e in q.experiments}
    assert arms == {"l2", "l1", "gaussian_nll", "laplace_nll", "dle", "rle_gaussian", "rle",
                    "heatmap", "integral", "integral_rle"}  # fmt: skip
    assert len(q.experiments) == 30 and {e.seed for e in q.experiments} == {0, 1, 2}
    assert len({e.steps for e in q.experiments}) == 1  # one fixed budget
    assert {e.data.noise.scale for e in q.experiments} == {COCO_NOISE_SCALE}
    assert estimate_seconds(list(q.experiments), jobs=2) <= 90 * 60


def test_sweep_spans_9x_budgets_and_four_noise_settings_and_reuses_quick():
    sw = get_profile("sweep")
    budget = [e for e in sw.experiments if e.group == "budget"]
    steps = sorted({e.steps for e in budget})
    assert steps[-1] >= 9 * steps[0] and {e.arm for e in budget} == {"l1", "rle"}
    noise = [e for e in sw.experiments if e.group == "noise"]
    assert {e.data.noise.name for e in noise} == set(NOISE) and len({e.steps for e in noise}) == 1
    assert NOISE["coco2x_outliers"].outlier_prob > 0 and NOISE["coco2x"].outlier_prob == 0
    pre = [e for e in sw.experiments if e.init_from is not None]
    assert pre and all(e.init_from.arm == "heatmap" for e in pre)
    quick = set(get_profile("quick").experiments)
    shared = [e for e in sw.experiments if replace(e, group="ablation") in quick]
    assert {e.arm for e in shared} == {"l1", "rle", "heatmap"}
    unique = {(e.method, e.steps, e.data, e.seed, e.init_from) for e in sw.experiments}
    assert len(unique) < len(sw.experiments)  # middle budget at COCO noise is in both groups
    assert (
        estimate_seconds(
            [e for e in sw.experiments if replace(e, group="ablation") not in quick], jobs=2
        )
        <= 150 * 60
    )


def test_sigma_profile_is_issue_19s_four_arms_at_the_sweeps_longest_budget():
    sigma = get_profile("sigma")
    assert sorted((e.arm, e.seed) for e in sigma.experiments) == sorted(
        (arm, s) for arm in ("rle", "rle_paper_log_s", "laplace_nll", "l1") for s in (0, 1, 2)
    )
    longest = max(e.steps for e in get_profile("sweep").experiments)
    assert {e.steps for e in sigma.experiments} == {longest} == {1800}
    assert {e.data.noise.name for e in sigma.experiments} == {"coco"}
    paper = next(e for e in sigma.experiments if e.arm == "rle_paper_log_s")
    cfg = apply_overrides(base_config(), paper.overrides(10))
    assert cfg.model.loss_options == {
        "q": "laplace", "convention": "paper", "log_s": True, "log_s_method": "sampling"
    }  # fmt: skip
    # the same method object as full's log-s arm: one definition, one cache key
    assert paper.method in {e.method for e in get_profile("full").experiments}


def test_full_has_the_flow_and_log_s_ablations():
    full = get_profile("full")
    flow = {e.arm for e in full.experiments if e.group == "flow"}
    assert {"rle_depth2", "rle_depth8", "rle_width16", "rle_width256"} <= flow
    assert {e.arm for e in full.experiments if e.group == "log_s"} == {
        "rle_paper_log_s", "rle_paper"
    }  # fmt: skip
    for e in full.experiments:  # every method's overrides are valid config items
        apply_overrides(base_config(), e.overrides(10))
    assert set(PROFILES) == {"quick", "sweep", "cost", "full", "sigma", "smoke"}
    assert full.cost is not None and {"resnet50", "resnet18"} <= set(full.cost.backbones)


def test_flow_size_options_build_that_flow():
    from posereg.losses import build_loss

    loss = build_loss("rle", flow_layers=2, flow_hidden=16)
    assert len(loss.flow.s) == 2 and loss.flow.s[0][0].out_features == 16
    assert len(build_loss("dle", flow_layers=8).flow.t) == 8


def test_key_ignores_logging_but_not_what_is_trained():
    cfg = apply_overrides(base_config(), list(METHODS["rle"].overrides))
    key = config_key(cfg)
    same = apply_overrides(cfg, ["train.log_every=7", "out_dir=elsewhere", "data.workers=3"])
    assert config_key(same) == key
    for item in ("optim.lr=0.002", "train.seed=1", "model.loss_options={q: gaussian}"):
        assert config_key(apply_overrides(cfg, [item])) != key, item
    assert config_key(cfg, init_key="a") != config_key(cfg, init_key="b")
    assert "train.log_every" in IGNORED_KEYS and "optim.lr" not in IGNORED_KEYS


def test_synthetic_data_has_its_own_benchmark_with_ap_against_the_clean_truth():
    from posereg.engine.evaluate import (
        COCO_AP,
        MPJPE,
        SYNTHETIC_AP,
        EvalResult,
        benchmark_for,
        primary_score,
    )
    from posereg.metrics.coco import COCOKeypointResult

    cfg = base_config()
    assert benchmark_for(cfg) is COCO_AP and SYNTHETIC_AP.primary.name == "AP_clean"
    assert not MPJPE.higher_is_better and MPJPE.score(40.0) > MPJPE.score(50.0)

    def coco(ap: float, truth: str) -> COCOKeypointResult:
        return COCOKeypointResult(ap, *[0.5] * 9, truth, "pycocotools", 1, "")

    result = EvalResult(
        coco={"labels": coco(0.1, "labels"), "clean": coco(0.05, "clean")},
        benchmark=SYNTHETIC_AP,
    )
    assert result.primary == pytest.approx(0.05)
    # with the synthetic benchmark, best.pt follows AP against the clean truth
    assert primary_score(result, cfg) == pytest.approx(0.05)
    assert primary_score(result, apply_overrides(cfg, ["eval.primary_metric=AP"])) == pytest.approx(
        0.1
    )
    assert primary_score(EvalResult(benchmark=SYNTHETIC_AP), cfg) == -np.inf


@pytest.mark.slow
def test_bad_profile_and_bad_set_are_one_line_errors(tmp_path):
    _one_line_error(_bench("nope", "--out", str(tmp_path)), "unknown bench profile 'nope'", "quick")
    _one_line_error(
        _bench("smoke", "--out", str(tmp_path), "--set", "optim.lrx=1"), "optim.lrx", "valid:"
    )
    _one_line_error(_bench("smoke", "--out", str(tmp_path), "--set", "optim.lr=abc"), "optim.lr")
    assert not (tmp_path / "data").exists()  # nothing was generated
    # folders that cannot be written are refused before any training, naming the flag
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _one_line_error(_bench("smoke", "--out", str(blocker / "bench")), "--out", "cannot write")
    _one_line_error(
        _bench("smoke", "--out", str(tmp_path), "--report", str(blocker / "docs" / "r.md")),
        "--report", str(blocker / "docs"), "cannot write",
    )  # fmt: skip
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_dry_run_lists_the_runs_and_the_estimate(tmp_path):
    out = _bench("quick", "--dry-run", "--jobs", "2", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "30 runs to train" in out.stdout and "estimated wall time with --jobs 2" in out.stdout
    assert "(target <= 90 min)" in out.stdout and not (tmp_path / "data").exists()


# --------------------------------------------------------------------------- real runs (slow)
def _train_logs(out: Path) -> dict[str, tuple[float, str]]:
    return {p.parent.name: (p.stat().st_mtime, p.read_text()) for p in out.glob("runs/*/train.log")}


@pytest.mark.slow
def test_failed_runs_then_resume_then_reuse(tmp_path):
    """An interrupted bench (both runs killed mid-training) exits non-zero naming each log; run
    again, it resumes each run from its last.pt (two at once with --jobs 2); a third time it
    trains nothing; a changed config gets a new key and is not reused."""
    out = tmp_path / "bench"
    args = ("smoke", "--out", str(out), "--jobs", "2", "--set", "train.checkpoint_every=1")
    killed = _bench(*args, env={"POSEREG_FAULT_KILL_AT_STEP": "2"})
    assert killed.returncode == 1, killed.stderr[-3000:]
    logs = sorted(out.glob("runs/*/train.log"))
    assert len(logs) == 2
    for log in logs:
        assert f"log: {log}" in killed.stderr
    assert not list(out.glob("runs/*/bench_result.json"))

    resumed = _bench(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming ") == 2
    for log in logs:
        assert "resuming" in log.read_text() and "at epoch" in log.read_text()
    results = json.loads((out / "smoke" / "results.json").read_text())
    assert [r["arm"] for r in results["runs"]] == ["l1", "rle"]
    for r in results["runs"]:
        assert r["steps"] == 4 and Path(r["run_dir"]).name == f"{r['arm']}-{r['key'][:12]}"
        m = r["metrics"]
        assert set(m) >= {"ap_noisy", "ap_clean", "pck_0.1", "err_sqrt_area", "kpt_auroc_miss",
                          "conf_oks_pearson", "conf_oks_spearman", "coverage", "reliability",
                          "ap_clean_const_score"}  # fmt: skip
        assert 0 <= m["pck_0.1"] <= 1 and m["err_sqrt_area"] > 0
        npz = np.load(Path(r["run_dir"]) / "predictions.npz")
        n, k = npz["keypoint_conf"].shape
        assert npz["keypoints"].shape == npz["truth_clean"].shape == (n, k, 2) and k == 17
        assert ("sigma" in npz) == (r["arm"] == "rle")
        err = np.linalg.norm(npz["keypoints"] - npz["truth_clean"], axis=-1)
        err = err / np.sqrt(npz["area"])[:, None]
        assert err[npz["visible"]].mean() == pytest.approx(m["err_sqrt_area"])
    (a, b) = [r["timing"] for r in results["runs"]]
    assert a["started"] < b["finished"] and b["started"] < a["finished"]  # side by side
    assert results["command"].startswith("posereg bench smoke") and results["seeds"] == [0]
    assert {"cpus", "torch", "python"} <= set(results["machine"])

    before = _train_logs(out)
    report = tmp_path / "docs" / "results.md"
    report.parent.mkdir()
    report.write_text("# Results\n\nKept text.\n")
    again = _bench(*args, "--report", str(report))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training " not in again.stdout and "resuming " not in again.stdout
    assert _train_logs(out) == before  # no process wrote to any run's log
    # the report: one section per profile, replaced (not appended) by the next run
    assert _bench(*args, "--report", str(report)).returncode == 0
    text = report.read_text()
    assert text.startswith("# Results\n\nKept text.\n")
    assert text.count("<!-- posereg bench smoke: begin -->") == 1
    assert text.count("<!-- posereg bench smoke: end -->") == 1
    assert "posereg bench smoke" in text.split("begin -->")[1]  # the command line at its head
    copied = json.loads((report.parent / "images/bench/smoke/results.json").read_text())
    assert [r["key"] for r in copied["runs"]] == [r["key"] for r in results["runs"]]

    profile = get_profile("smoke")
    same = plan_runs(profile, out, ["train.checkpoint_every=1"], make_data=False)
    assert [r.status.state for r in same] == [RunState.DONE, RunState.DONE]
    changed = plan_runs(profile, out, ["optim.lr=0.002"], make_data=False)
    assert [r.status.state for r in changed] == [RunState.NEW, RunState.NEW]
    assert {r.key for r in changed}.isdisjoint({r.key for r in same})

    # posereg eval on a bench run: the same evaluation object, the synthetic benchmark's primary
    run_dir = Path(results["runs"][1]["run_dir"])
    ev = subprocess.run(
        [str(BIN), "eval", str(run_dir / "config.yaml"), "--checkpoint", str(run_dir / "best.pt")],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-3000:]
    ap_clean = results["runs"][1]["metrics"]["ap_clean"]
    assert f"primary (synthetic benchmark): AP_clean {ap_clean:.4f}" in ev.stdout

    for r in results["runs"]:  # the calibration numbers, recomputed from the npz
        _check_calibration_wiring(Path(r["run_dir"]), tmp_path)


def _check_calibration_wiring(run_dir: Path, tmp_path: Path) -> None:
    from posereg.bench.evaluation import checkpoint_of, evaluate_run
    from posereg.metrics import oks
    from posereg.models.build import model_from_checkpoint
    from posereg.skeletons import COCO17
    from posereg.uncertainty import region_from_criterion

    m = evaluate_run(run_dir, tmp_path / "p.npz")
    z = np.load(tmp_path / "p.npz")
    vis = z["visible"]
    o = np.array([oks(t, k[None], a, COCO17.sigmas, v)[0]
                  for t, k, a, v in zip(z["truth_clean"], z["keypoints"], z["area"], vis, strict=True)])  # fmt: skip
    assert m.conf_oks_pearson == pytest.approx(np.corrcoef(z["instance_score"], o)[0, 1])
    err = np.linalg.norm(z["keypoints"] - z["truth_clean"], axis=-1) / np.sqrt(z["area"])[:, None]
    miss = err[vis] > 0.1
    conf = z["keypoint_conf"][vis]
    assert m.kpt_auroc_miss == pytest.approx(((-conf)[miss][:, None] > (-conf)[~miss][None]).mean())
    if "sigma" in z:
        bar = (z["truth_clean"] - z["keypoints"]) / z["sigma"]
        model = model_from_checkpoint(checkpoint_of(run_dir))[0]
        r08 = region_from_criterion(model.criterion).radius(0.8)
        inside = np.linalg.norm(bar[vis], axis=-1) <= r08
        assert 0 < r08 and m.coverage["0.8"] == pytest.approx(inside.mean())
        assert [p for p, _ in m.reliability][:2] == [0.05, 0.1]
    else:
        assert m.coverage is None and m.reliability is None


def test_heatmap_initialised_run_points_at_its_heatmap_run_and_inherits_its_key(tmp_path):
    runs = plan_runs(get_profile("sweep"), tmp_path, [], make_data=False)
    by = {(r.exp.arm, r.exp.seed): r for r in runs}
    pre, heat = by[("rle_from_heatmap", 0)], by[("heatmap", 0)]
    assert pre.depends_on is heat and pre.cfg.model.init_from == str(heat.run_dir / "best.pt")
    # the heatmap run's key is part of this one's: retrain the heatmap run, and this one follows
    assert pre.key == config_key(pre.cfg, heat.key) != config_key(pre.cfg, "another heatmap run")
    plain = by[("rle", 0)]
    assert pre.key != plain.key and len({r.key for r in runs}) == 45


@pytest.mark.slow
def test_every_method_of_the_profiles_builds_and_trains_a_step():
    """Each method's overrides make a model whose loss on encoded targets is finite and has
    gradients (so no profile run fails on a bad option after the data is made)."""
    import torch

    from posereg.models.build import build_model, codec_for

    methods = {e.method for e in get_profile("full").experiments}
    assert {m.arm for m in METHODS.values()} <= {m.arm for m in methods}
    rng = np.random.default_rng(0)
    for m in sorted(methods, key=lambda m: m.arm):
        cfg = apply_overrides(base_config(), [*m.overrides, "model.width=0.125"])
        torch.manual_seed(0)
        model, codec = build_model(cfg), codec_for(cfg)
        h, w = cfg.data.input_size
        enc = [codec.encode(rng.uniform(0, [w, h], (17, 2)), np.full(17, 2)) for _ in range(2)]
        target = torch.as_tensor(np.stack([e.target for e in enc]), dtype=torch.float32)
        weight = torch.as_tensor(np.stack([e.target_weight for e in enc]), dtype=torch.float32)
        loss = model.loss(model(torch.randn(2, 3, h, w)), target, weight)
        loss.backward()
        assert torch.isfinite(loss), m.arm
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_repeated_set_flags_all_apply(tmp_path):
    """`--set a --set b` applies both (argparse's default would keep only the last flag's):
    the first flag's bad value must be the error."""
    args = ("smoke", "--dry-run", "--out", str(tmp_path))
    bad_first = _bench(*args, "--set", "train.batch_size=0", "--set", "optim.lr=0.002")
    assert bad_first.returncode == 2
    assert "train.batch_size: 0 is out of range" in bad_first.stderr
    ok = _bench(*args, "--set", "optim.lr=0.002", "--set", "train.batch_size=4")
    assert ok.returncode == 0, ok.stderr[-2000:]
