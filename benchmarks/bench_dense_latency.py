"""CPU latency of the one-stage dense model per image with 1, 4 and 8 people (issue 17, Sec. 5).

    python benchmarks/bench_dense_latency.py [--size 256] [--threads 1] [--people 1 4 8]
                                             [--steps 120] [--rounds 30] [--json out.json]
                                             [--score-threshold 0.3]

The network's cost does not depend on how many people an image holds; only the decode after
it (candidates above the score threshold, NMS, the kept people) does. To time a decode that
sees real people, the model (half-width ResNet-18 + FPN + dense head, RLE loss) is first
overfit for ``--steps`` Adam steps to the timed images themselves: stick figures
(:mod:`posereg.synth.sticks`) of the same height (100 px) in the cells of a 4 x 2 grid, the
first 1, 4 or 8 cells. Then, round by round and interleaved across the images, one image at a
time (batch 1): the network (``model(image)``) and the decode (:func:`decode_people`, box NMS
and OKS-NMS) are timed separately; the table gives medians over the rounds and the ratio of
each image's total to the 1-person image's (the issue's goal: <= 1.1 from 1 to 8 people).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from posereg.models.dense import build_dense_model, decode_people
from posereg.synth.sticks import draw_sticks, stick_people

HEIGHT = 100.0  # px, every person


def scene(count: int, size: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``count`` (<= 8) people in the first cells of a 4 x 2 grid over a size x size image."""
    if not 1 <= count <= 8:
        raise ValueError(f"people per image must be 1..8, got {count}")
    cell_w, cell_h = size / 4, size / 2
    specs = [((i % 4 + 0.5) * cell_w, (i // 4 + 0.5) * cell_h, HEIGHT) for i in range(count)]
    target = stick_people(specs, seed=seed)
    return draw_sticks((size, size), target), target


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1000.0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--people", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--steps", type=int, default=120, help="Adam steps of the overfit")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        help="the decode's threshold (a deployment setting; COCO evaluation keeps 0.05)",
    )
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    scenes = [scene(n, args.size, seed=i) for i, n in enumerate(args.people)]
    images = torch.stack([image for image, _ in scenes])
    targets = [target for _, target in scenes]
    model = build_dense_model("rle", width=args.width)
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = model.loss(images, targets).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train_s = time.perf_counter() - start
    model.eval()

    def decode(out, nms):
        return decode_people(out, score_threshold=args.score_threshold, nms=nms)

    rows = {n: {"forward": [], "box": [], "oks": []} for n in args.people}
    found: dict[int, dict[str, int]] = {}
    errors: dict[int, float] = {}
    with torch.inference_mode():
        for i, n in enumerate(args.people):  # warm-up, and the people found
            out = model(images[i : i + 1])
            found[n] = {nms: len(decode(out, nms)[0].scores) for nms in ("box", "oks")}
            result = decode(out, "box")[0]
            truth = targets[i]["keypoints"][..., :2].numpy()
            if len(result.scores):
                err = np.linalg.norm(result.keypoints[None] - truth[:, None], axis=-1).mean(-1)
                errors[n] = float(err.min(1).mean())
        for _ in range(args.rounds):
            for i, n in enumerate(args.people):
                ms, out = timed(lambda i=i: model(images[i : i + 1]))
                rows[n]["forward"].append(ms)
                for nms in ("box", "oks"):
                    rows[n][nms].append(timed(lambda out=out, nms=nms: decode(out, nms))[0])

    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in rows.items()}
    base = args.people[0]
    print(
        f"dense RLE, resnet18 w{args.width} + FPN, {args.size}x{args.size}, batch 1, "
        f"{args.threads} thread(s), median of {args.rounds} rounds; overfit {args.steps} steps "
        f"({train_s:.0f} s) to the timed images; score threshold {args.score_threshold}"
    )
    print("| people | found (box / OKS-NMS) | kpt err px | network ms | decode ms box / OKS "
          f"| total ms (box) | total / {base} person |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    result = []
    for n in args.people:
        m = med[n]
        total = m["forward"] + m["box"]
        ratio = total / (med[base]["forward"] + med[base]["box"])
        ratio_oks = (m["forward"] + m["oks"]) / (med[base]["forward"] + med[base]["oks"])
        err = f"{errors[n]:.2f}" if n in errors else "-"
        print(
            f"| {n} | {found[n]['box']} / {found[n]['oks']} | {err} | {m['forward']:.1f} "
            f"| {m['box']:.2f} / {m['oks']:.2f} | {total:.1f} | {ratio:.3f} (OKS-NMS {ratio_oks:.3f}) |"
        )
        result.append(
            {"people": n, "found": found[n], "keypoint_error_px": errors.get(n), **m,
             "total_box_ms": total, "ratio_box": ratio, "ratio_oks": ratio_oks}
        )  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "train_s": train_s, "rows": result}, f, indent=1)


if __name__ == "__main__":
    main()
