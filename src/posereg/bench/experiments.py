"""What ``posereg bench PROFILE`` runs: one :class:`Experiment` per training run, and the profiles.

Every experiment is an ordinary ``posereg train`` run of :func:`base_config` (the main job's recipe,
configs/synth_rle.yaml) with a few ``--set`` overrides (the method), a label-noise setting, a seed
and a budget in optimizer steps. Profiles are plain typed factories (:data:`PROFILES`); issue 10
lists what each must cover.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from posereg.config import Config, from_dict

__all__ = [
    "NoiseSetting",
    "DataSetting",
    "Method",
    "Experiment",
    "COCO_NOISE_SCALE",
    "NOISE",
    "METHODS",
    "base_config",
    "Profile",
    "PROFILES",
    "get_profile",
    "MEASURED_IMG_PER_S",
    "RUN_OVERHEAD_S",
    "estimate_seconds",
    "HEADS",
    "StepModel",
    "CostSpec",
    "COST_MINUTES",
]

#: COCO's annotator spread in the units of posereg.synth's noise model (issue 10, docs/synth.md):
#: per axis k_i s / (2 sqrt 2) = 0.354 k_i s. Written into every profile explicitly, so the bench
#: does not depend on the generator's default.
COCO_NOISE_SCALE = 0.354


@dataclass(frozen=True)
class NoiseSetting:
    """The label noise of one synthetic set (posereg.synth.noise.NoiseConfig fields, all explicit).

    Arguments:
        name: ``clean``, ``coco``, ``coco2x``, ``coco2x_outliers``.
        scale: Gaussian annotator spread in units of k_i s (COCO: :data:`COCO_NOISE_SCALE`).
        outlier_prob, swap_prob: gross errors and left/right swaps (0 unless named).
    """

    name: str
    scale: float
    outlier_prob: float = 0.0
    swap_prob: float = 0.0
    occluded_factor: float = 2.0
    outlier_scale: float = 5.0

    def options(self) -> dict[str, float]:
        """The ``data.synth.options.noise`` dict (every field, so no preset default leaks in)."""
        return {
            "scale": self.scale, "occluded_factor": self.occluded_factor,
            "outlier_prob": self.outlier_prob, "outlier_scale": self.outlier_scale,
            "swap_prob": self.swap_prob,
        }  # fmt: skip


NOISE: dict[str, NoiseSetting] = {
    "clean": NoiseSetting("clean", 0.0),
    "coco": NoiseSetting("coco", COCO_NOISE_SCALE),
    "coco2x": NoiseSetting("coco2x", 2 * COCO_NOISE_SCALE),
    "coco2x_outliers": NoiseSetting(
        "coco2x_outliers", 2 * COCO_NOISE_SCALE, outlier_prob=0.03, swap_prob=0.01
    ),
}


@dataclass(frozen=True)
class DataSetting:
    """One generated synthetic set (``data.synth``): the runner makes it once and every run of
    this setting reads it.

    Arguments:
        noise: the label noise.
        num_train, num_val: images per split.
        image_size: side of the square images (the main job's 128).
        preset: the generator's difficulty preset (scenes; its noise is replaced by ``noise``).
        seed: the generator's seed (the same scenes for every noise setting and run seed).
        workers: generator processes (None: all cores; 0 for tiny sets, where starting
            processes costs more than rendering). Not part of the set's identity.
    """

    noise: NoiseSetting
    num_train: int = 8000
    num_val: int = 400
    image_size: int = 128
    preset: str = "easy"
    seed: int = 0
    workers: int | None = None

    def synth(self, root: str) -> dict[str, Any]:
        """The ``data.synth`` section for a set stored in ``root``."""
        return {
            "root": root, "preset": self.preset, "num_train": self.num_train,
            "num_val": self.num_val, "seed": self.seed, "workers": self.workers,
            "options": {"image_size": [self.image_size, self.image_size], "noise": self.noise.options()},
        }  # fmt: skip


@dataclass(frozen=True)
class Method:
    """A row of the ablation: what changes from :func:`base_config` (as ``--set`` strings).

    Arguments:
        arm: the method's name in results (``l1``, ``rle``, ``heatmap``, ...).
        overrides: ``KEY=VALUE`` items, as ``posereg train --set`` takes them.
        head: the head kind, for the time estimate (``regression``, ``heatmap``, ...).
        params: what the report groups and labels by (loss, q, convention, ...).
    """

    arm: str
    overrides: tuple[str, ...] = ()
    head: str = "regression"
    params: tuple[tuple[str, Any], ...] = ()


# Map heads take 64x64 crops instead of 64x48 (docs/heads.md: their sides must be multiples of 32);
# everything else, optimizer and schedule included, is the base recipe's for every method.
_MAP_INPUT = ("data.input_size=[64, 64]",)


def _rle(q: str = "laplace", convention: str = "official", **extra: Any) -> tuple[str, ...]:
    options = {"q": q, "convention": convention, **extra}
    body = ", ".join(
        f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()
    )
    return ("model.loss=rle", f"model.loss_options={{{body}}}")


def _loss(name: str) -> tuple[str, ...]:
    return (f"model.loss={name}", "model.loss_options={}")


METHODS: dict[str, Method] = {
    m.arm: m
    for m in (
        Method("l2", _loss("l2"), params=(("loss", "l2"),)),
        Method("l1", _loss("l1"), params=(("loss", "l1"),)),
        Method("gaussian_nll", _loss("gaussian_nll"), params=(("loss", "gaussian_nll"),)),
        Method("laplace_nll", _loss("laplace_nll"), params=(("loss", "laplace_nll"),)),
        Method("dle", _loss("dle"), params=(("loss", "dle"),)),
        Method("rle_gaussian", _rle("gaussian"), params=(("loss", "rle"), ("q", "gaussian"))),
        # the main job's loss (configs/synth_rle.yaml): RLE, Laplace Q, official convention
        Method("rle", _rle("laplace"), params=(("loss", "rle"), ("q", "laplace"))),
        Method(
            "rle_paper",
            _rle("laplace", "paper"),
            params=(("loss", "rle"), ("q", "laplace"), ("convention", "paper")),
        ),
        # the paper's convention with the normaliser log s (appendix E); the estimator is named
        # so that runs cached with the earlier default (the Riemann sum) get another key
        Method(
            "rle_paper_log_s",
            _rle("laplace", "paper", log_s=True, log_s_method="sampling"),
            params=(("loss", "rle"), ("convention", "paper"), ("log_s", True)),
        ),
        Method(
            "heatmap",
            ("model.head=heatmap", "model.loss=null", "model.loss_options={}", *_MAP_INPUT),
            head="heatmap",
            params=(("head", "heatmap"),),
        ),
        Method(
            "integral",
            ("model.head=integral", "model.loss=null", "model.loss_options={}", *_MAP_INPUT),
            head="integral",
            params=(("head", "integral"),),
        ),
        Method(
            "integral_rle",
            ("model.head=integral_rle", *_rle("laplace"), *_MAP_INPUT),
            head="integral_rle",
            params=(("head", "integral_rle"), ("loss", "rle")),
        ),
    )
}


def base_config() -> Config:
    """The main job's recipe (configs/synth_rle.yaml; a test keeps them equal): half-width
    ResNet-18 at 64x48, Adam 3e-3, cosine schedule with 100 warm-up steps, batch 64, flip test.

    Data paths, the synthetic set, seed, length and threads are the runner's to set.
    """
    return from_dict(
        Config,
        {
            "name": "bench",
            "data": {
                "format": "coco", "skeleton": "coco17", "input_size": [64, 48], "workers": 1,
                "transform": {
                    "augment": True, "flip_prob": 0.5, "scale_factor": 0.25,
                    "rotation_factor": 15.0, "rotation_prob": 0.5, "half_body_prob": 0.0,
                },
            },
            "model": {
                "backbone": "resnet18", "width": 0.5, "pretrained": False, "loss": "rle",
                "loss_options": {"q": "laplace", "convention": "official"},
            },
            "optim": {"optimizer": "adam", "lr": 3.0e-3, "schedule": "cosine", "warmup_steps": 100},
            "train": {"epochs": 22, "batch_size": 64, "threads": 2, "eval_every": 11, "log_every": 20},
            "eval": {"flip_test": True, "batch_size": 128},
        },
    )  # fmt: skip


@dataclass(frozen=True)
class Experiment:
    """One training run of a profile.

    Arguments:
        method: what is trained (:data:`METHODS`, or a variant made with ``dataclasses.replace``).
        group: the question it answers (``ablation``, ``budget``, ``noise``, ``pretrained``,
            ``convention``, ``flow``, ``log_s``, ``smoke``).
        seed: ``train.seed``.
        steps: the budget in optimizer steps (``train.max_steps``; ``train.epochs`` is set so
            that the cosine schedule ends there, see :meth:`overrides`).
        data: the synthetic set.
        init_from: the run whose best checkpoint initialises the backbone (``model.init_from``;
            the paper's heatmap-pretrained variant), trained first.
        extra: further ``--set`` items (tests: a smaller model or input).
    """

    method: Method
    group: str
    seed: int
    steps: int
    data: DataSetting
    init_from: Experiment | None = None
    extra: tuple[str, ...] = ()

    @property
    def arm(self) -> str:
        return self.method.arm

    def overrides(self, steps_per_epoch: int) -> list[str]:
        """The ``--set`` items on top of :func:`base_config` and the data section.

        ``train.epochs`` is ``ceil(steps / steps_per_epoch)``: the cosine schedule's horizon
        (epochs x steps per epoch) ends within one epoch after ``train.max_steps``.
        """
        epochs = max(1, math.ceil(self.steps / max(steps_per_epoch, 1)))
        return [
            *self.method.overrides,
            f"train.seed={self.seed}",
            f"train.max_steps={self.steps}",
            f"train.epochs={epochs}",
            "train.eval_every=0",  # evaluate once, at the end: best.pt is the final model
            "train.threads=1",
            "train.progress=false",
            "data.workers=0",
            *self.extra,
        ]

    def params(self) -> dict[str, Any]:
        """What the report groups by: the method's params, budget, noise, seed."""
        out: dict[str, Any] = {
            "loss": None, "head": "regression", "q": None, "convention": None,
            **dict(self.method.params),
            "steps": self.steps, "noise": self.data.noise.name,
            "noise_scale": self.data.noise.scale, "num_train": self.data.num_train,
            "init_from": None if self.init_from is None else self.init_from.arm,
        }  # fmt: skip
        if out["loss"] == "rle" and out["convention"] is None:
            out["convention"] = "official"
        return out


@dataclass(frozen=True)
class Profile:
    """A named list of experiments and the number of seeds it uses."""

    name: str
    experiments: tuple[Experiment, ...]
    description: str
    budget_minutes: float | None = None  # the wall-time target on the 2-core machine, --jobs 2
    seeds: tuple[int, ...] = field(default=(0, 1, 2))
    cost: CostSpec | None = None  # item 6, measured after the runs (posereg.bench.cost)


# --------------------------------------------------------------------------- cost (item 6)
#: The heads compared at inference (Tab. 2a, 6; posereg.bench.cost measures them).
HEADS = ("regression", "heatmap", "integral")


@dataclass(frozen=True)
class StepModel:
    """A model whose train step is timed: a ResNet of ``width`` at ``input_size``, ``batch`` crops.

    Fields:
        name: its short name in the report.
    """

    name: str
    backbone: str = "resnet18"
    width: float = 1.0
    input_size: tuple[int, int] = (256, 192)
    batch: int = 32

    @property
    def label(self) -> str:
        h, w = self.input_size
        return f"{self.backbone} x{self.width:g} {h}x{w} b{self.batch}"


#: The main job's model (configs/synth_rle.yaml) and a full ResNet-18 at 256x192.
MAIN_STEP = StepModel("main", "resnet18", 0.5, (64, 48), 64)
R18_STEP = StepModel("r18", "resnet18", 1.0, (256, 192), 32)


@dataclass(frozen=True)
class CostSpec:
    """What :func:`posereg.bench.cost.measure` measures and how (part of a bench profile).

    Fields:
        backbones: the backbones of the inference table, each with every head of :data:`HEADS`.
        input_size: (H, W) of the inference crops.
        threads: torch (and ONNX Runtime) intra-op threads for every timing.
        rounds: interleaved rounds; the median is reported.
        iters: calls per variant per round (inference) / train steps per variant per round.
        onnx: also export the regression and heatmap models and time them in ONNX Runtime.
        step_models: the models of the RLE-over-L1 train-step overhead.
    """

    backbones: tuple[str, ...] = ("resnet50", "resnet18")
    input_size: tuple[int, int] = (256, 192)
    threads: int = 1
    rounds: int = 7
    iters: int = 5
    onnx: bool = True
    step_models: tuple[StepModel, ...] = field(default=(MAIN_STEP, R18_STEP))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Wall minutes of ``posereg bench cost`` (the default :class:`CostSpec`) on the 2-core machine
#: (6 min 40 s measured on a quiet machine, commit 6e330bf).
COST_MINUTES = 7.0

# --------------------------------------------------------------------------- time estimates
#: Training images/s of one 1-thread run (data.workers=0) while a second one runs beside it on
#: the 2-core development machine, per head at its bench input size: a regression run (64x48)
#: and a heatmap run (64x64) side by side, ``posereg train`` 200 steps each, nice 10, read from
#: train_log.csv in the stretch where no other job was using the CPUs (elsewhere both halved).
#: The integral heads share the heatmap head's deconvolutions and are assumed to cost the same.
#: docs/bench.md, "How the budgets were chosen". The dry run's estimate uses them.
MEASURED_IMG_PER_S: dict[str, float] = {
    "regression": 300.0,
    "heatmap": 98.0,
    "integral": 98.0,
    "integral_rle": 98.0,
}
#: Seconds per run besides training: start-up, loading, the final evaluation with flip test,
#: the run report and the bench's own evaluation (measured ~35 s on 400 val images).
RUN_OVERHEAD_S = 40.0
#: Seconds to generate one synthetic image with 2 workers (measured ~220 img/s at 128x128).
SYNTH_S_PER_IMAGE = 1 / 220


def run_seconds(exp: Experiment, batch_size: int = 64) -> float:
    """Estimated wall seconds of one run at :data:`MEASURED_IMG_PER_S`."""
    return exp.steps * batch_size / MEASURED_IMG_PER_S[exp.method.head] + RUN_OVERHEAD_S


def estimate_seconds(experiments: list[Experiment], jobs: int) -> float:
    """Wall seconds for ``experiments`` on ``jobs`` slots: data generation, then the runs
    scheduled longest first onto the slot that frees first (dependencies ignored)."""
    data = {e.data for e in experiments}
    gen = sum((d.num_train + d.num_val) * SYNTH_S_PER_IMAGE for d in data)
    slots = [0.0] * max(jobs, 1)
    for t in sorted((run_seconds(e) for e in experiments), reverse=True):
        i = slots.index(min(slots))
        slots[i] += t
    return gen + max(slots)


# --------------------------------------------------------------------------- the profiles
#: quick's budget (steps) and the sweep's middle budget: the same, so the sweep reuses quick's
#: L1, RLE and heatmap runs at COCO-like noise.
QUICK_STEPS = 600
QUICK_DATA = DataSetting(NOISE["coco"])

_ABLATION = ("l2", "l1", "gaussian_nll", "laplace_nll", "dle", "rle_gaussian", "rle",
             "heatmap", "integral", "integral_rle")  # fmt: skip


def _arms_at(
    name: str, group: str, arms: tuple[str, ...], steps: int, seeds: tuple[int, ...], what: str,
    budget_minutes: float | None = None,
) -> Profile:  # fmt: skip
    """A profile of ``arms`` (:data:`METHODS`) x ``seeds`` at ``steps``, COCO-like noise."""
    exps = tuple(
        Experiment(METHODS[arm], group, s, steps, QUICK_DATA) for s in seeds for arm in arms
    )
    description = f"{what} at {steps} steps, COCO-like noise, seeds {list(seeds)}"
    return Profile(name, exps, description, budget_minutes, seeds)


def quick(seeds: tuple[int, ...] = (0, 1, 2)) -> Profile:
    """Issue 10 item 1: every loss and head at one fixed budget, COCO-like noise, 3 seeds."""
    what = "loss and head ablation"
    return _arms_at("quick", "ablation", _ABLATION, QUICK_STEPS, seeds, what, 90.0)


def sweep(seeds: tuple[int, ...] = (0, 1, 2), mid: int = QUICK_STEPS) -> Profile:
    """Issue 10 item 2: L1 vs RLE over budgets (mid/3, mid, 3 mid: 9x) at COCO-like noise and over
    noise at the middle budget; the heatmap-pretrained RLE arm; RLE official vs paper."""
    budgets = (mid // 3, mid, 3 * mid)
    exps: list[Experiment] = []
    for s in seeds:
        for arm in ("l1", "rle"):
            exps += [Experiment(METHODS[arm], "budget", s, b, QUICK_DATA) for b in budgets]
            exps += [
                Experiment(METHODS[arm], "noise", s, mid, DataSetting(n)) for n in NOISE.values()
            ]
        heatmap = Experiment(METHODS["heatmap"], "pretrained", s, mid, QUICK_DATA)
        pre = replace(METHODS["rle"], arm="rle_from_heatmap")
        exps += [heatmap, Experiment(pre, "pretrained", s, mid, QUICK_DATA, init_from=heatmap)]
        exps += [
            Experiment(METHODS["rle"], "convention", s, mid, QUICK_DATA),
            Experiment(METHODS["rle_paper"], "convention", s, mid, QUICK_DATA),
        ]
    return Profile(
        "sweep",
        tuple(exps),
        f"L1 vs RLE: budgets {list(budgets)} steps at COCO-like noise, noise "
        f"{list(NOISE)} at {mid} steps; heatmap-pretrained RLE; official vs paper; seeds {list(seeds)}",
        150.0,
        seeds,
    )


def cost(spec: CostSpec | None = None) -> Profile:
    """Issue 10 item 6 alone: parameters, FLOPs and batch-1 CPU latency (PyTorch and ONNX
    Runtime) of the regression, heatmap and integral models with ResNet-50 and ResNet-18 at
    256x192, and the RLE-over-L1 train-step overhead. No training runs."""
    spec = spec or CostSpec()
    return Profile(
        "cost",
        (),
        f"{', '.join(spec.backbones)} x {', '.join(HEADS)} at "
        f"{spec.input_size[0]}x{spec.input_size[1]}, batch 1, {spec.threads} thread(s); "
        f"RLE-over-L1 train step of {', '.join(m.name for m in spec.step_models)}",
        10.0,
        (),
        spec,
    )


def full(seeds: tuple[int, ...] = (0, 1, 2, 3, 4), mid: int = 3000) -> Profile:
    """Every item of issue 10 at longer budgets and more seeds (bigger machines, GPUs): the
    ablation, the sweep, the flow's depth (2-8) and width (16-256), log s on/off and the cost
    (item 6, more rounds)."""
    data = DataSetting(NOISE["coco"])
    q = quick(seeds)
    exps = [replace(e, steps=mid, data=data) for e in q.experiments]
    exps += list(sweep(seeds, mid).experiments)
    for s in seeds:
        for depth in (2, 4, 6, 8):
            m = Method(f"rle_depth{depth}", _rle(flow_layers=depth), params=(("loss", "rle"), ("flow_layers", depth), ("flow_hidden", 64)))  # fmt: skip
            exps.append(Experiment(m, "flow", s, mid, data))
        for width in (16, 64, 256):
            m = Method(f"rle_width{width}", _rle(flow_hidden=width), params=(("loss", "rle"), ("flow_layers", 6), ("flow_hidden", width)))  # fmt: skip
            exps.append(Experiment(m, "flow", s, mid, data))
        for log_s in (False, True):
            m = (
                METHODS["rle_paper_log_s"]
                if log_s
                else Method(
                    "rle_paper",
                    _rle("laplace", "paper", log_s=False),
                    params=(("loss", "rle"), ("convention", "paper"), ("log_s", False)),
                )
            )
            exps.append(Experiment(m, "log_s", s, mid, data))
    spec = CostSpec(rounds=15)
    return Profile(
        "full", tuple(exps), f"all items at {mid} steps, seeds {list(seeds)}", None, seeds, spec
    )


#: The sweep's longest budget (3 x QUICK_STEPS): issue 19's sigma profile trains at it.
SIGMA_STEPS = 3 * QUICK_STEPS
#: Issue 19 item 2's 2D arms: RLE in both conventions, the Laplace NLL and L1.
SIGMA_ARMS = ("rle", "rle_paper_log_s", "laplace_nll", "l1")


def sigma(seeds: tuple[int, ...] = (0, 1, 2)) -> Profile:
    """Issue 19 item 2 (2D): what sigma means under RLE official, RLE paper + log s, the Laplace
    NLL and L1 at the sweep's 1800-step budget, COCO-like noise, 3 seeds. The official RLE and
    L1 runs are the sweep's (the same keys, reused from the cache)."""
    return _arms_at("sigma", "sigma", SIGMA_ARMS, SIGMA_STEPS, seeds, ", ".join(SIGMA_ARMS))


#: For tests: two methods, a tiny generated set, a few steps, a small model and input.
SMOKE_DATA = DataSetting(NOISE["coco"], num_train=24, num_val=6, image_size=64, workers=0)
SMOKE_EXTRA = (
    "model.width=0.125",
    "train.batch_size=8",
    "eval.batch_size=8",
    "optim.warmup_steps=2",
)


def smoke(seeds: tuple[int, ...] = (0,)) -> Profile:
    """Tests: L1 and RLE, 4 steps each on 24 tiny images."""
    exps = tuple(
        Experiment(METHODS[arm], "smoke", s, 4, SMOKE_DATA, extra=SMOKE_EXTRA)
        for s in seeds
        for arm in ("l1", "rle")
    )
    return Profile("smoke", exps, "tests: L1 and RLE, 4 steps on 24 tiny images", None, seeds)


PROFILES = {
    "quick": quick, "sweep": sweep, "cost": cost, "full": full, "sigma": sigma, "smoke": smoke,
}  # fmt: skip


def get_profile(name: str) -> Profile:
    """The profile called ``name``; ValueError listing the valid ones otherwise."""
    try:
        factory = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown bench profile {name!r}; valid: {', '.join(PROFILES)}") from None
    return factory()
