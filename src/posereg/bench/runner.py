"""``posereg bench PROFILE``: make the synthetic sets, train each experiment as a ``posereg train``
subprocess (``--jobs`` side by side, reusing finished runs), evaluate each finished run, aggregate
``results.json`` and hand it to the report.

Layout under ``--out`` (default ``runs/bench``): ``data/<noise>-<hash>/`` (one synthetic set per
data setting), ``runs/<arm>-<key12>/`` (one per run: ``bench_config.yaml``, ``train.log``, the
training run's files, ``bench_result.json``, ``predictions.npz``), ``<profile>/results.json`` and
the report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from posereg.bench.cache import RunState, RunStatus, config_key, find_run, run_state
from posereg.bench.experiments import (
    COST_MINUTES,
    CostSpec,
    DataSetting,
    Experiment,
    Profile,
    base_config,
    estimate_seconds,
    get_profile,
    run_seconds,
)
from posereg.config import Config, apply_overrides, from_dict, save_yaml, to_dict
from posereg.engine.distributed import EpochBatchSampler

__all__ = ["PlannedRun", "RunOutcome", "BenchSummary", "plan_runs", "run_bench", "data_root"]

logger = logging.getLogger("posereg.bench")


def _hash(obj: Any, n: int = 8) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def data_root(out: Path, data: DataSetting) -> Path:
    """Where the synthetic set of ``data`` lives: ``out/data/<noise>-<hash of its settings>``."""
    settings = data.synth("")
    del settings["workers"]  # how it is made, not what
    return out / "data" / f"{data.noise.name}-{_hash(settings)}"


def _data_section(cfg: Config, data: DataSetting, root: Path) -> Config:
    ann, img = root / "annotations", root / "images"
    d = to_dict(cfg)
    d["data"].update(
        train_ann=str(ann / "person_keypoints_train.json"), train_images=str(img / "train"),
        val_ann=str(ann / "person_keypoints_val.json"), val_images=str(img / "val"),
        synth=data.synth(str(root)),
    )  # fmt: skip
    return from_dict(Config, d)


@dataclass
class PlannedRun:
    """One experiment, resolved: its config, key, folder and how far that folder got."""

    exp: Experiment
    cfg: Config
    key: str
    run_dir: Path
    status: RunStatus
    depends_on: PlannedRun | None = None

    @property
    def log(self) -> Path:
        return self.run_dir / "train.log"


@dataclass
class RunOutcome:
    """What became of a planned run."""

    run: PlannedRun
    result: dict[str, Any] | None = None
    error: str | None = None
    reused: bool = False


@dataclass
class BenchSummary:
    """What ``posereg bench`` did: ``results.json``'s path and the failed runs (with their logs)."""

    results_path: Path
    outcomes: list[RunOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.error is not None]


def _count_instances(cfg: Config) -> int:
    """Training instances of ``cfg``'s synthetic set, generating it first when it is missing."""
    from posereg.engine.builders import build_datasets

    train, _ = build_datasets(cfg, train_split=True)
    assert train is not None
    return len(train)


def plan_runs(
    profile: Profile, out: Path, overrides: list[str], make_data: bool = True
) -> list[PlannedRun]:
    """Resolve every experiment of ``profile``: config (base + data + method + ``overrides``),
    key and run folder.

    Arguments:
        make_data: generate the synthetic sets that are missing (needed for the keys, which
            depend on the number of training instances through ``train.epochs``); False (dry
            run): experiments whose set is missing get an empty key.

    Raises:
        ConfigError: a bad override (checked before any data is generated).
    """
    apply_overrides(base_config(), overrides)  # a bad --set fails here, before any work
    instances: dict[DataSetting, int | None] = {}
    planned: dict[Experiment, PlannedRun] = {}
    runs_dir = out / "runs"
    for exp in profile.experiments:
        if exp in planned:
            continue
        root = data_root(out, exp.data)
        base = _data_section(base_config(), exp.data, root)
        base = replace(base, out_dir=str(runs_dir))
        probe = apply_overrides(base, [*exp.overrides(1), *overrides])
        if exp.data not in instances:
            ann = root / "annotations" / "person_keypoints_train.json"
            instances[exp.data] = _count_instances(probe) if make_data or ann.is_file() else None
        n = instances[exp.data]
        spe = (
            EpochBatchSampler(n, probe.train.batch_size).num_batches()
            if n and n >= probe.train.batch_size
            else 1
        )
        items = [*exp.overrides(spe), *overrides]
        dep = None
        if exp.init_from is not None:
            dep = planned.get(exp.init_from)
            if dep is None:
                raise ValueError(
                    f"{profile.name}: {exp.arm} is initialised from a run not in the profile"
                )
            items.append(f"model.init_from={dep.run_dir / 'best.pt'}")
        cfg = apply_overrides(base, items)
        # without the data (dry run) the key is provisional (train.epochs unknown): it still
        # tells which experiments share a run, but names no folder
        key = config_key(cfg, dep.key if dep else None)
        if n is None:
            run_dir = runs_dir / f"{exp.arm}-(data not made yet)"
            status = RunStatus(RunState.NEW, "data not made yet")
        else:
            run_dir = find_run(runs_dir, exp.arm, key)
            status = run_state(run_dir, key)
        cfg = replace(cfg, name=run_dir.name)
        planned[exp] = PlannedRun(exp, cfg, key, run_dir, status, dep)
    return [planned[e] for e in profile.experiments]


def _train_command(run: PlannedRun) -> list[str]:
    cli = [sys.executable, "-c", "import sys; from posereg.cli import main; sys.exit(main())"]
    if run.status.state is RunState.INTERRUPTED:
        return [*cli, "train", "--resume", str(run.run_dir), "--device", "cpu"]
    return [*cli, "train", str(run.run_dir / "bench_config.yaml"), "--exist-ok", "--device", "cpu"]


def _start(run: PlannedRun) -> subprocess.Popen:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    if run.status.state is not RunState.INTERRUPTED:
        save_yaml(run.cfg, run.run_dir / "bench_config.yaml")
    cmd = _train_command(run)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with run.log.open("a") as log:
        log.write(f"# posereg bench {datetime.now(UTC).isoformat()}: {shlex.join(cmd[3:])}\n")
    log = run.log.open("a")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    return proc


def _bench_result(
    run: PlannedRun, metrics: dict[str, Any], timing: dict[str, float]
) -> dict[str, Any]:
    trained = json.loads((run.run_dir / "metrics.json").read_text())
    return {
        "key": run.key, "arm": run.exp.arm, "group": run.exp.group, "seed": run.exp.seed,
        "params": run.exp.params(), "run_dir": str(run.run_dir),
        "wall_s": trained.get("wall_time_s"), "train_img_per_s": trained.get("images_per_second"),
        "steps": trained.get("steps"), "metrics": metrics, "timing": timing,
    }  # fmt: skip


def _evaluate(run: PlannedRun, timing: dict[str, float]) -> RunOutcome:
    from posereg.bench.evaluation import evaluate_run

    try:
        metrics = evaluate_run(run.run_dir).to_json()
        result = _bench_result(run, metrics, timing)
    except Exception as e:  # reported with the run; the bench goes on
        with run.log.open("a") as log:
            log.write(f"# posereg bench: evaluation failed\n{traceback.format_exc()}")
        return RunOutcome(run, error=f"evaluation failed: {e}")
    tmp = run.run_dir / ".bench_result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(run.run_dir / "bench_result.json")
    return RunOutcome(run, result=result)


def _reused(run: PlannedRun) -> RunOutcome:
    result = json.loads((run.run_dir / "bench_result.json").read_text())
    # this profile's name for the run (another profile may have trained it)
    result.update(arm=run.exp.arm, group=run.exp.group, seed=run.exp.seed, params=run.exp.params())
    return RunOutcome(run, result=result, reused=True)


def _say(line: str) -> None:
    print(f"posereg bench: {line}", flush=True)


def _schedule(runs: list[PlannedRun], jobs: int) -> dict[str, RunOutcome]:
    """Train what needs training, ``jobs`` at a time (longest first, a run after the one it is
    initialised from), and evaluate each as it finishes; returns outcomes by key."""
    outcomes: dict[str, RunOutcome] = {}
    todo: dict[str, PlannedRun] = {}
    for run in runs:
        if run.key in outcomes or run.key in todo:
            continue
        if run.status.state is RunState.DONE:
            outcomes[run.key] = _reused(run)
        else:
            todo[run.key] = run
    queue = sorted(todo.values(), key=lambda r: -run_seconds(r.exp))
    # runs that trained but were not evaluated (an interrupted bench): evaluate now
    for run in [r for r in queue if r.status.state is RunState.TRAINED]:
        queue.remove(run)
        _say(f"{run.run_dir.name}: trained earlier, evaluating")
        outcomes[run.key] = _evaluate(run, {})
    running: dict[str, tuple[subprocess.Popen, PlannedRun, float]] = {}
    try:
        _loop(queue, running, outcomes, jobs)
    except KeyboardInterrupt:
        # Ctrl-C reached the training processes too: each saves last.pt and stops; wait for them
        for proc, _, _ in running.values():
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise KeyboardInterrupt(
            "interrupted; run the same command again to resume (finished runs are kept)"
        ) from None
    return outcomes


def _loop(
    queue: list[PlannedRun],
    running: dict[str, tuple[subprocess.Popen, PlannedRun, float]],
    outcomes: dict[str, RunOutcome],
    jobs: int,
) -> None:
    """Start ready runs while slots are free; evaluate each run as it finishes (after its slot
    has been given to the next run)."""
    while queue or running:
        _fill(queue, running, outcomes, jobs)
        finished = [(k, v) for k, v in running.items() if v[0].poll() is not None]
        if not finished:
            time.sleep(0.2)
            continue
        for key, _ in finished:
            del running[key]
        failed = [(k, v) for k, v in finished if v[0].returncode != 0]
        for key, (proc, run, _) in failed:
            outcomes[key] = RunOutcome(
                run, error=f"training failed (exit {proc.returncode}); log: {run.log}"
            )
            _say(f"{run.run_dir.name} FAILED (exit {proc.returncode}); log: {run.log}")
        _fill(queue, running, outcomes, jobs)  # the freed slots train while this process evaluates
        for key, (proc, run, t0) in finished:
            if proc.returncode != 0:
                continue
            timing = {"started": t0, "finished": time.time()}
            outcome = outcomes[key] = _evaluate(run, timing)
            if outcome.error is not None:
                _say(f"{run.run_dir.name} FAILED: {outcome.error}; log: {run.log}")
                continue
            m = outcome.result["metrics"]  # type: ignore[index]
            _say(
                f"{run.run_dir.name} done: AP clean {_fmt(m['ap_clean'])}, PCK@0.1 "
                f"{_fmt(m['pck_0.1'])}, {timing['finished'] - t0:.0f} s"
            )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _fill(
    queue: list[PlannedRun],
    running: dict[str, tuple[subprocess.Popen, PlannedRun, float]],
    outcomes: dict[str, RunOutcome],
    jobs: int,
) -> None:
    """Start queued runs (longest first) whose start run, if any, is done, up to ``jobs``."""
    for run in list(queue):
        if len(running) >= jobs:
            return
        dep = run.depends_on
        if dep is not None and dep.key not in outcomes:
            continue
        queue.remove(run)
        if dep is not None and outcomes[dep.key].error is not None:
            outcomes[run.key] = RunOutcome(
                run, error=f"not trained: the run it starts from failed ({dep.log})"
            )
            continue
        verb = "resuming" if run.status.state is RunState.INTERRUPTED else "training"
        _say(f"{verb} {run.run_dir.name} ({run.exp.group}, seed {run.exp.seed}); log {run.log}")
        running[run.key] = (_start(run), run, time.time())


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
            text=True, timeout=10, cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def _machine() -> dict[str, Any]:
    import torch

    return {
        "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
    }  # fmt: skip


def _writable(folder: Path, what: str) -> None:
    """Make ``folder`` and check that a file can be written in it; OSError naming it otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".posereg-bench-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise OSError(f"{what} {folder}: cannot write there ({e.strerror or e})") from None


def _cost_path(out: Path, spec: CostSpec) -> Path:
    """Where the cost measurement of ``spec`` on this machine is kept: ``out/cost/<hash>.json``."""
    return out / "cost" / f"cost-{_hash([spec.to_dict(), _machine()], 12)}.json"


def _cost(profile: Profile, out: Path) -> dict[str, Any]:
    """Item 6 of ``profile.cost``, measured after the runs in this process (nothing else of the
    bench is running), or read back from an earlier measurement of the same spec on this machine."""
    assert profile.cost is not None
    path = _cost_path(out, profile.cost)
    if path.exists():
        _say(f"cost: reusing {path} (delete it to measure again)")
        return json.loads(path.read_text())
    from posereg.bench.cost import measure

    _say(f"cost: measuring ({profile.cost.rounds} interleaved rounds; keep the machine idle)")
    t0 = time.time()
    cost = measure(profile.cost) | {"commit": _commit(), "wall_s": time.time() - t0}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cost, indent=1))
    tmp.replace(path)
    _say(f"cost: {cost['wall_s']:.0f} s, kept in {path}")
    return cost


def describe_plan(profile: Profile, runs: list[PlannedRun], jobs: int, out: Path) -> list[str]:
    """The dry run's lines: each run and its state, and the wall-time estimate."""
    from posereg.bench.experiments import MEASURED_IMG_PER_S, RUN_OVERHEAD_S

    lines = [f"profile {profile.name}: {profile.description}"]
    seen: set[str] = set()
    to_train: list[Experiment] = []
    for r in runs:
        shared = r.key and r.key in seen
        state = "shared with an earlier row" if shared else r.status.state.value
        lines.append(
            f"  {r.exp.group:10s} {r.exp.arm:16s} seed {r.exp.seed} {r.exp.steps:5d} steps "
            f"noise {r.exp.data.noise.name:16s} {r.run_dir.name}: {state}"
        )
        if not shared and r.status.state is not RunState.DONE:
            to_train.append(r.exp)
        if r.key:
            seen.add(r.key)
    est = estimate_seconds(to_train, jobs)
    rates = ", ".join(f"{k} {v:g}" for k, v in MEASURED_IMG_PER_S.items())
    target = f" (target <= {profile.budget_minutes:g} min)" if profile.budget_minutes else ""
    if profile.experiments:
        lines.append(
            f"{len(to_train)} runs to train of {len(seen) or len(runs)}; estimated wall time "
            f"with --jobs {jobs}: {est / 60:.0f} min{target}, from measured img/s per 1-thread "
            f"run beside another ({rates}) + {RUN_OVERHEAD_S:g} s per run + data generation"
        )
    if profile.cost is not None:
        path = _cost_path(out, profile.cost)
        state = f"done ({path})" if path.exists() else "new, measured after the runs"
        cost_target = "" if profile.experiments else target
        lines.append(f"cost (item 6): {state}; about {COST_MINUTES:g} min on 2 cores{cost_target}")
    return lines


def run_bench(
    profile_name: str,
    out: str | Path = "runs/bench",
    jobs: int | None = None,
    overrides: list[str] | None = None,
    dry_run: bool = False,
    command: str | None = None,
    report: str | Path | None = None,
) -> BenchSummary | list[str]:
    """Run a profile (see the module docstring); returns the summary, or the dry run's lines.

    ``report``: a Markdown file (e.g. docs/results.md) that gets this profile's report as its
    own section (replaced on the next run of the same profile, other profiles' sections kept),
    its plots in ``images/bench/<profile>/`` and a copy of results.json beside it.

    Raises:
        ValueError: an unknown profile; ConfigError: a bad override (before any work).
    """
    profile = get_profile(profile_name)
    if overrides and not profile.experiments:
        raise ValueError(f"profile {profile.name!r} trains nothing; --set has nothing to change")
    out = Path(out)
    jobs = jobs or os.cpu_count() or 1
    overrides = list(overrides or [])
    if dry_run:
        plan = plan_runs(profile, out, overrides, make_data=False)
        return describe_plan(profile, plan, jobs, out)
    for folder, what in ((out, "--out"), (Path(report).parent if report else None, "--report")):
        if folder is not None:  # before hours of training, not after
            _writable(folder, what)
    started, t0 = datetime.now(UTC), time.time()
    import torch

    torch.set_num_threads(1)  # this process evaluates finished runs while the others train
    runs = plan_runs(profile, out, overrides, make_data=True)
    outcomes = _schedule(runs, jobs)
    cost = _cost(profile, out) if profile.cost is not None else None
    results = {
        "profile": profile.name,
        "command": command or shlex.join(["posereg", "bench", profile_name]),
        "commit": _commit(),
        "seeds": list(profile.seeds),
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "wall_s": time.time() - t0,
        "machine": _machine(),
        "runs": [
            outcomes[r.key].result
            | {"group": r.exp.group, "arm": r.exp.arm, "seed": r.exp.seed, "params": r.exp.params()}
            for r in runs
            if outcomes[r.key].result is not None
        ],  # fmt: skip
        "failed": [
            {
                "arm": r.exp.arm,
                "group": r.exp.group,
                "seed": r.exp.seed,
                "run_dir": str(r.run_dir),
                "log": str(r.log),
                "error": outcomes[r.key].error,
            }
            for r in runs
            if outcomes[r.key].error is not None
        ],  # fmt: skip
        "cost": cost,
    }
    prof_dir = out / profile.name
    prof_dir.mkdir(parents=True, exist_ok=True)
    path = prof_dir / "results.json"
    tmp = prof_dir / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)
    _say(f"{len(results['runs'])} runs in {path}")
    _write_report(results, prof_dir / "results.md", prof_dir / "images")
    if report is not None:
        _splice_report(results, Path(report))
    unique = {r.key: outcomes[r.key] for r in runs}
    return BenchSummary(path, list(unique.values()))


def _write_report(results: dict[str, Any], md: Path, image_dir: Path) -> bool:
    try:
        from posereg.bench.report import write_report
    except ImportError as e:
        _say(f"no report written: posereg.bench.report is not available ({e})")
        return False
    write_report(results, md, image_dir)
    _say(f"report: {md}")
    return True


def _splice_report(results: dict[str, Any], report: Path) -> None:
    """Put the profile's report into ``report`` between its markers (see :func:`run_bench`)."""
    name = results["profile"]
    report.parent.mkdir(parents=True, exist_ok=True)
    part = report.parent / f".{report.stem}.{name}.md.tmp"
    if not _write_report(results, part, report.parent / "images" / "bench" / name):
        return
    begin, end = f"<!-- posereg bench {name}: begin -->", f"<!-- posereg bench {name}: end -->"
    section = f"{begin}\n{part.read_text().rstrip()}\n{end}\n"
    part.unlink()
    old = report.read_text() if report.exists() else "# posereg bench results\n\n"
    if begin in old and end in old:
        new = old[: old.index(begin)] + section + old[old.index(end) + len(end) + 1 :]
    else:
        new = old.rstrip("\n") + "\n\n" + section
    tmp = report.with_name(f".{report.name}.tmp")
    tmp.write_text(new)
    tmp.replace(report)
    copy = report.parent / "images" / "bench" / name / "results.json"
    copy.write_text(json.dumps(results, indent=1))
    _say(f"report section '{name}' in {report}; results.json copied to {copy}")
