"""A one-minute demonstration of the RLE core on synthetic points (no images needed).

A small MLP maps a feature vector to K = 4 keypoints. The labels carry heavy-tailed noise
(Student-t, 2 degrees of freedom) whose scale differs per keypoint. The same network is
trained with RLE and with L2; the demo prints, per keypoint, the true noise scale, the
learned sigma (which RLE gets for free) and the location error of both against the clean
truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from posereg.losses import build_loss
from posereg.models.heads import RegressionHead

__all__ = ["DemoResult", "run_demo"]

NOISE_SCALES = (0.004, 0.008, 0.016, 0.032)  # per keypoint, normalized coordinates


@dataclass
class DemoResult:
    """Per-keypoint numbers of one demo run (length-K lists)."""

    noise_scale: list[float]
    sigma_rle: list[float]
    error_rle: list[float]
    error_l2: list[float]


def _make_data(n: int, generator: torch.Generator, mixing: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Features (n, F), clean keypoints (n, K, 2) and noisy labels (n, K, 2)."""
    x = torch.randn(n, mixing.shape[0], generator=generator)
    clean = (0.3 * torch.tanh(x @ mixing)).reshape(n, len(NOISE_SCALES), 2)
    scale = torch.tensor(NOISE_SCALES).reshape(1, -1, 1)
    # Student-t with 2 degrees of freedom (infinite variance): z / sqrt(chi2_2 / 2), chi2_2 = -2 log U
    z = torch.randn(n, len(NOISE_SCALES), 2, generator=generator)
    u = torch.rand(n, len(NOISE_SCALES), 2, generator=generator).clamp_min(1e-12)
    t_noise = z / torch.sqrt(-torch.log(u))
    return x, clean, clean + scale * t_noise


def _train(loss_name: str, x: Tensor, y: Tensor, steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    k = y.shape[1]
    model = nn.Sequential(nn.Linear(x.shape[1], 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())
    head = RegressionHead(128, k, norm_mu=False)
    criterion = build_loss(loss_name)
    params = [*model.parameters(), *head.parameters(), *criterion.parameters()]
    opt = torch.optim.Adam(params, lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    weight = torch.ones(256, k, 1)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (256,), generator=gen)
        out = head(model(x[idx]))
        loss = criterion(out.mu, out.sigma, y[idx], weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return nn.Sequential(model, head)


def run_demo(steps: int = 1500, seed: int = 0, verbose: bool = True) -> DemoResult:
    """Train RLE and L2 regressors on synthetic heavy-tailed labels and report what they learned.

    Raises:
        ValueError: ``steps`` below 1 (nothing would be trained, and the table would describe
            two untrained networks).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--steps must be a positive number of optimisation steps, got {steps!r}")
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(8, 2 * len(NOISE_SCALES), generator=gen) / 8**0.5
    x, _, y = _make_data(8000, gen, mixing)
    x_val, clean_val, _ = _make_data(4000, gen, mixing)

    results = {}
    for name in ("rle", "l2"):
        net = _train(name, x, y, steps, seed)
        with torch.no_grad():
            out = net(x_val)
        err = (out.mu - clean_val).norm(dim=-1).mean(0)  # (K,)
        results[name] = (err.tolist(), out.sigma.mean(dim=(0, 2)).tolist())

    res = DemoResult(
        noise_scale=list(NOISE_SCALES),
        sigma_rle=results["rle"][1],
        error_rle=results["rle"][0],
        error_l2=results["l2"][0],
    )
    if verbose:
        print("posereg demo: RLE vs L2 on labels with Student-t(2) noise (normalized coordinates)")
        print(
            f"{'keypoint':>8} {'noise scale':>12} {'RLE sigma':>10} {'sigma/scale':>12} "
            f"{'RLE error':>10} {'L2 error':>10}"
        )
        for i in range(len(NOISE_SCALES)):
            print(
                f"{i:>8} {res.noise_scale[i]:>12.4f} {res.sigma_rle[i]:>10.4f} "
                f"{res.sigma_rle[i] / res.noise_scale[i]:>12.1f} "
                f"{res.error_rle[i]:>10.4f} {res.error_l2[i]:>10.4f}"
            )
        mean_rle = sum(res.error_rle) / len(res.error_rle)
        mean_l2 = sum(res.error_l2) / len(res.error_l2)
        print(f"mean location error vs clean truth: RLE {mean_rle:.4f}, L2 {mean_l2:.4f}")
        print(
            "RLE's sigma follows each keypoint's noise scale (a near-constant sigma/scale: the flow\n"
            "learns the shape and spread of the normalized residual); L2 learns no uncertainty."
        )
    return res
