"""Numbers behind the RLE core's tests, printed for the record.

    python benchmarks/bench_core.py

Prints: the flow's inverse and Jacobian errors, the 2D normalization of log_prob, the
official-convention parity error, and the heavy-tail experiment (location error of RLE vs
L2, held-out log-likelihood of RLE's density vs a Gaussian fit).
"""

from __future__ import annotations

import math
import time

import torch

from posereg.flows import RealNVP
from posereg.losses import RLELoss, build_loss


def flow_checks() -> None:
    torch.manual_seed(0)
    for dim in (2, 3):
        flow = RealNVP(dim=dim, init_gain=1.0).double()
        x = 2 * torch.randn(200, dim, dtype=torch.float64)
        with torch.no_grad():
            z, ladj = flow(x)
            inv_err = float((flow.float().inverse(z.float()) - x.float()).abs().max())
        flow.double()
        jac_err = 0.0
        for i in range(len(x)):
            jac = torch.autograd.functional.jacobian(lambda v, f=flow: f(v[None])[0][0], x[i])
            jac_err = max(jac_err, abs(float(torch.linalg.slogdet(jac)[1] - ladj[i])))
        print(
            f"RealNVP D={dim}: max |x - inverse(forward(x))| (float32) = {inv_err:.2e}; "
            f"max |ladj - slogdet(autograd J)| = {jac_err:.2e}"
        )
    flow = RealNVP(dim=2, init_gain=1.0).double()
    axis = torch.linspace(-14, 14, 801, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = float(flow.log_prob(grid).exp().sum()) * (28 / 800) ** 2
    print(f"RealNVP D=2: Riemann sum of exp(log_prob) over [-14, 14]^2 = {mass:.5f}")


def parity() -> None:
    torch.manual_seed(1)
    flow = RealNVP(dim=2, init_gain=1.0).double()
    b, k = 32, 17
    pred = torch.rand(b, k, 2, dtype=torch.float64) - 0.5
    gt = pred + 0.05 * torch.randn(b, k, 2, dtype=torch.float64)
    sigma = 0.02 + 0.2 * torch.rand(b, k, 2, dtype=torch.float64)
    w = (torch.rand(b, k, 1) > 0.3).double()
    with torch.no_grad():
        # the official formula (rlepose criterion.py + regression_nf.py)
        log_phi = flow.log_prob(((pred - gt) / sigma).reshape(-1, 2)).reshape(b, k, 1)
        nf = (torch.log(sigma) - log_phi) * w
        log_q = torch.log(sigma * math.sqrt(2 * math.pi)) + (gt - pred).abs() / (
            math.sqrt(2) * sigma + 1e-9
        )
        ref = float((nf + log_q * w).sum() / b)
        ours = float(build_loss("rle", flow=flow)(pred, sigma, gt, w))
    print(f"official convention parity: |ours - official| = {abs(ours - ref):.2e} (loss {ref:.4f})")


def heavy_tail(
    trials: int = 12, n: int = 500, steps: int = 300, df: float = 1.5, scale: float = 0.05
) -> None:
    torch.manual_seed(0)
    mu_true = 0.6 * torch.rand(trials, 2) - 0.3
    t = torch.distributions.StudentT(df)
    train = mu_true + scale * t.sample((n, trials, 2))
    test = mu_true + scale * t.sample((4000, trials, 2))
    for convention in ("official", "paper"):
        crit = RLELoss(convention=convention)
        mu = torch.zeros(trials, 2, requires_grad=True)
        logit = torch.full((trials, 2), -2.0, requires_grad=True)
        opt = torch.optim.Adam(
            [{"params": [mu, logit], "lr": 1e-2}, {"params": crit.parameters(), "lr": 3e-3}]
        )
        for _ in range(steps):
            loss = crit(
                mu.expand(n, -1, -1),
                torch.sigmoid(logit).expand(n, -1, -1),
                train,
                torch.ones(n, trials, 1),
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        err_rle = float((mu.detach() - mu_true).norm(dim=-1).mean())
        err_l2 = float((train.mean(0) - mu_true).norm(dim=-1).mean())
        line = f"heavy tail (Student-t df={df}), {convention}: location error RLE {err_rle:.4f} vs L2 {err_l2:.4f} (ratio {err_rle / err_l2:.2f})"
        if convention == "paper":
            exact = RLELoss(convention="paper", log_s=True, flow=crit.flow)
            with torch.no_grad():
                s = torch.sigmoid(logit)
                ll = (
                    -float(
                        exact(
                            mu.expand(4000, -1, -1),
                            s.expand(4000, -1, -1),
                            test,
                            torch.ones(4000, trials, 1),
                        )
                    )
                    / trials
                )
            ll_gauss = float(
                torch.distributions.Normal(train.mean(0), train.std(0))
                .log_prob(test)
                .sum(-1)
                .mean()
            )
            line += f"; held-out log-lik per point RLE {ll:.3f} vs Gaussian fit {ll_gauss:.3f}"
        print(line)


if __name__ == "__main__":
    t0 = time.time()
    flow_checks()
    parity()
    heavy_tail()
    print(f"({time.time() - t0:.0f} s)")
