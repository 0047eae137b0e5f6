"""The report of a bench profile from the runs that have finished so far (the bench still running).

    python benchmarks/bench_report_partial.py PROFILE --out runs/bench --md partial.md

``posereg bench PROFILE`` writes ``results.json`` and the report when every run has finished.
This script builds the same ``results`` dict from the finished runs' ``bench_result.json`` (the
runs of the profile's plan, ``posereg.bench.runner.plan_runs``: the keys the runner uses, named
as this profile names them) and renders it with ``posereg.bench.report.write_report``; the head
says how many of the planned runs it holds. It trains and evaluates nothing; for the final
report re-run ``posereg bench PROFILE --out OUT --report MD``, which reuses every finished run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from posereg.bench.experiments import get_profile
from posereg.bench.report import write_report
from posereg.bench.runner import plan_runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("--out", default="runs/bench", help="the bench folder")
    ap.add_argument("--md", required=True, help="the Markdown report to write")
    ap.add_argument("--images", help="plots folder (default: beside --md, images/)")
    args = ap.parse_args()
    profile = get_profile(args.profile)
    plan = plan_runs(profile, Path(args.out), [], make_data=False)
    runs = []
    for run in plan:
        path = run.run_dir / "bench_result.json"
        if path.is_file():
            result = json.loads(path.read_text())
            result.update(
                arm=run.exp.arm, group=run.exp.group, seed=run.exp.seed, params=run.exp.params()
            )
            runs.append(result)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    results = {
        "profile": profile.name,
        "command": shlex.join(["python", *sys.argv])
        + f"  # partial: {len(runs)} of {len(plan)} runs finished",
        "commit": commit or "?",
        "seeds": list(profile.seeds),
        "runs": runs,
        "cost": None,
    }
    md = Path(args.md)
    write_report(results, md, Path(args.images) if args.images else md.parent / "images")
    print(f"{len(runs)} of {len(plan)} runs finished; report: {md}")


if __name__ == "__main__":
    main()
