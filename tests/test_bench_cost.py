"""Issue 10 item 6: posereg.bench.cost (FLOPs, latency, train-step overhead) and the runner's
``cost`` step: measured once after the runs, kept per spec and machine, reused, reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import posereg.bench.cost as cost_module
from posereg.bench import experiments
from posereg.bench.cost import gflops
from posereg.bench.experiments import CostSpec, StepModel, get_profile
from posereg.bench.runner import run_bench

BIN = Path(sys.executable).parent / "posereg"

#: Every head of one small backbone at a small input, ONNX on, 2 rounds: seconds, not minutes.
TINY = CostSpec(
    backbones=("resnet18",),
    input_size=(64, 64),
    rounds=2,
    iters=1,
    onnx=True,
    step_models=(StepModel("tiny", "resnet18", 0.25, (64, 48), 4),),
)


class _Conv(nn.Module):
    """One 3x3 convolution, 3 -> 8 channels, no bias: 8 x 3 x 9 multiply-adds per output pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)


def test_gflops_counts_two_per_multiply_add():
    macs = 10 * 12 * 8 * 3 * 9  # output pixels x output channels x (input channels x 3 x 3)
    assert gflops(_Conv(), torch.zeros(1, 3, 10, 12)) == pytest.approx(2 * macs / 1e9)


def test_cost_profile_has_the_issues_models_and_no_runs():
    p = get_profile("cost")
    assert p.experiments == () and p.cost is not None
    assert p.cost.backbones == ("resnet50", "resnet18") and p.cost.input_size == (256, 192)
    assert p.cost.onnx and {m.name for m in p.cost.step_models} == {"main", "r18"}


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory) -> tuple[Path, Path, list]:
    """``run_bench`` of the cost profile with :data:`TINY` once (measured), then again (reused).

    Returns (bench folder, report, the specs posereg.bench.cost.measure was called with).
    """
    root = tmp_path_factory.mktemp("cost")
    calls: list[CostSpec] = []
    real = cost_module.measure

    def counted(spec: CostSpec) -> dict:
        calls.append(spec)
        return real(spec)

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(experiments.PROFILES, "cost", lambda: experiments.cost(TINY))
        mp.setattr(cost_module, "measure", counted)
        report = root / "docs" / "results.md"
        plan = run_bench("cost", root / "bench", jobs=1, dry_run=True)
        assert any("cost (item 6): new" in line for line in plan), plan
        assert not any("runs to train" in line for line in plan), plan  # it trains nothing
        run_bench("cost", root / "bench", jobs=1, report=report)
        assert len(calls) == 1
        first = (root / "bench" / "cost" / "results.json").read_text()
        plan = run_bench("cost", root / "bench", jobs=1, dry_run=True)
        assert any("cost (item 6): done" in line for line in plan), plan
        run_bench("cost", root / "bench", jobs=1, report=report)
        (root / "first.json").write_text(first)
    return root / "bench", report, calls


def test_measure_reports_every_head_with_onnx_for_the_exported_two(tiny_bench):
    cost = json.loads((tiny_bench[0] / "cost" / "results.json").read_text())["cost"]
    assert cost["spec"] == json.loads(json.dumps(TINY.to_dict()))
    rows = {r["head"]: r for r in cost["heads"]["rows"]}
    assert set(rows) == {"regression", "heatmap", "integral"}
    for head, r in rows.items():
        assert r["params_m"] > 1 and r["gflops"] > 0 and r["eager_ms"] > 0, r
        assert (r["onnx_ms"] is not None) == (head != "integral"), r
    # the heatmap head adds three deconvolutions on top of the same backbone (Tab. 2a)
    assert rows["regression"]["gflops"] < rows["heatmap"]["gflops"]
    assert rows["regression"]["params_m"] < rows["heatmap"]["params_m"]
    (step,) = cost["rle_overhead"]["rows"]
    assert step["model"] == "resnet18 x0.25 64x48 b4"
    assert step["l1_s_per_step"] > 0 and step["rle_s_per_step"] > 0
    lo, hi = step["overhead_range"]  # per-round ratios; their median lies between min and max
    assert lo <= step["overhead"] <= hi and -1 < lo


def test_runner_measures_cost_once_then_reuses_it_and_reports_it(tiny_bench, monkeypatch):
    bench, report, calls = tiny_bench
    first = json.loads((bench.parent / "first.json").read_text())
    again = json.loads((bench / "cost" / "results.json").read_text())
    assert calls == [TINY] and first["runs"] == [] and again["cost"] == first["cost"]
    assert first["wall_s"] >= first["cost"]["wall_s"] > 0  # the profile's time includes the cost
    assert again["wall_s"] < first["cost"]["wall_s"]  # reused: not measured again
    kept = list((bench / "cost").glob("cost-*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["heads"] == first["cost"]["heads"]
    text = report.read_text()
    assert text.count("<!-- posereg bench cost: begin -->") == 1  # the second run replaced it
    assert f"- cost (item 6): measured in {first['cost']['wall_s'] / 60:.1f} min at commit" in text
    heads = {r["head"]: r for r in first["cost"]["heads"]["rows"]}
    ratio = heads["regression"]["gflops"] / heads["heatmap"]["gflops"]
    assert "## 6. Cost (Tab. 2a, 6)" in text and "| resnet18 | regression | " in text
    assert f"regression / heatmap FLOPs {ratio:.3f}" in text
    assert "RLE-over-L1 train-step overhead" in text
    # a changed spec is measured anew
    other = CostSpec(**{**TINY.__dict__, "rounds": 3})
    monkeypatch.setitem(experiments.PROFILES, "cost", lambda: experiments.cost(other))
    plan = run_bench("cost", bench, jobs=1, dry_run=True)
    assert any("cost (item 6): new" in line for line in plan), plan


def test_set_on_the_cost_profile_is_one_line_error(tmp_path):
    out = subprocess.run(
        [str(BIN), "bench", "cost", "--out", str(tmp_path), "--set", "optim.lr=0.1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == ["posereg bench: error: profile 'cost' trains nothing; --set has nothing to change"]  # fmt: skip
    assert not (tmp_path / "cost").exists()
