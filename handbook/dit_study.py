"""The DiT paper's two studies, repeated at ShapeWorld's scale (chapter 6's benchmark, not its notebook).

1. **The conditioning ablation** (Peebles & Xie, section 3.2 and their Figure 5): the same network
   with the condition entering in-context, by cross-attention, by adaLN and by adaLN-Zero, trained
   under one budget, compared by FID. The paper (DiT-XL/2, 400K steps, ImageNet 256):
   in-context 35.24, cross-attention 26.14, adaLN 25.21, adaLN-Zero 19.47 (``PAPER_ABLATION_FID``).
2. **Scaling** (their section 5, Figures 6 and 8): several widths and patch sizes trained for the
   same number of steps; the paper finds FID falls as forward Gflops rise, whatever the mix of width
   and patch size. Here that is one number, the Spearman rank correlation of Gflops and FID.

Every run is ``dit_images.train_model`` (the shipped model's recipe: data, captions with views,
guidance dropout, cosine schedule, EMA) with a smaller network and fewer steps, then
``dit_images.evaluate``: DDIM-50 samples with guidance for balanced prompts, judged, FID against
real renders. Runs are cached in a JSON file as they finish, so a long study can be resumed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from handbook import checks
from handbook.dit import CONDITIONINGS, gflops

PAPER_ABLATION_FID = {"in_context": 35.24, "cross_attention": 26.14, "adaln": 25.21, "adaln_zero": 19.47}
# The study's network: the shipped DiT (patches of 4, 4 blocks) at half its width, so that the
# eight ablation runs and the sweep fit in about an hour of one core.
ABLATION_NETWORK = {"hidden_size": 64, "depth": 4, "n_heads": 4, "patch_size": 4}
# ``SCALING_GRID`` and ``STUDY_STEPS``: about 0.15 s a step for this network on one core.
# Six (width x patch) configurations from 2.7 to 32 MFLOPs a forward pass (the last is the ablation's
# adaLN-Zero network, trained once for both). Width 128 at patch 4 (the shipped model, 120 MFLOPs)
# would cost more than the other runs together.
SCALING_GRID = tuple({"hidden_size": width, "depth": 4, "n_heads": 4, "patch_size": patch,
                      "conditioning": "adaln_zero"} for width in (32, 48, 64) for patch in (8, 4))
STUDY_STEPS = 2000
# The shipped recipe's EMA (decay 0.999) remembers about 1,000 steps; after 1,500 steps 0.999^1500 = 22%
# of the averaged weights were still the zero-output initial ones, and a first sizing of the study
# sampled noise (FID 705 / 689). A 200-step memory (0.995^2000 < 1e-4) forgets the start.
STUDY_TRAINING = {"ema_decay": 0.995}
STUDY_SEEDS = (0, 1)
EVAL_IMAGES = 180  # every shape x colour x size class under each of the three views once


def run_key(network: dict[str, Any], seed: int, steps: int) -> str:
    """The cache key of one run: its network overrides, seed and steps."""
    return json.dumps({"network": network, "seed": seed, "steps": steps}, sort_keys=True)


def train_and_evaluate(network: dict[str, Any], seed: int, steps: int = STUDY_STEPS,
                       eval_images: int = EVAL_IMAGES, cache: str | Path | None = None,
                       **training: Any) -> dict[str, Any]:
    """One run of the study: the shipped recipe with ``network`` (overrides of DiTConfig.shapeworld)
    for ``steps`` steps from ``seed``, evaluated on ``eval_images`` samples; ``training`` overrides
    fields of ``dit_images.TrainingConfig`` (e.g. ``n_train`` for a quick check). With ``cache`` (a
    JSON file), a run already there is read instead of trained, and a new one is added to it."""
    from handbook import dit_images

    checks.positive_int("seed", seed, minimum=0)
    checks.positive_ints(steps=steps, eval_images=eval_images)
    key = run_key({**network, **training}, seed, steps)
    path = Path(cache) if cache is not None else None
    done = json.loads(path.read_text()) if path is not None and path.exists() else {}
    if key in done:
        return done[key]
    start = time.perf_counter()
    report = dit_images.train_model(seed=seed, steps=steps, progress=False, config=network,
                                    eval_images=eval_images, **training)
    config = dit_images.model_config(**network)
    run = {**{k.removeprefix("ddim50_"): v for k, v in report["metrics"].items()},
           "gflops": gflops(config), "parameters": report["model"].num_parameters(),
           "train_seconds": report["seconds"], "seconds": time.perf_counter() - start,
           "network": network, "seed": seed, "steps": steps}
    if path is not None:  # re-read: another process may have added runs meanwhile
        done = json.loads(path.read_text()) if path.exists() else {}
        done[key] = run
        path.write_text(json.dumps(done, indent=1) + "\n")
    return run


def conditioning_ablation(seeds=STUDY_SEEDS, steps: int = STUDY_STEPS, cache: str | Path | None = None,
                          eval_images: int = EVAL_IMAGES) -> dict[str, list[dict[str, Any]]]:
    """The four conditionings on ``ABLATION_NETWORK``, each from every seed: {conditioning: [runs]}."""
    return {name: [train_and_evaluate({**ABLATION_NETWORK, "conditioning": name}, seed, steps, eval_images, cache,
                                      **STUDY_TRAINING)
                   for seed in seeds]
            for name in CONDITIONINGS}


def paper_order_holds(mean_fid: dict[str, float]) -> bool:
    """Whether our FIDs rank the conditionings as the paper's do (adaLN-Zero best, in-context worst)."""
    ours = sorted(mean_fid, key=mean_fid.get)
    return ours == sorted(PAPER_ABLATION_FID, key=PAPER_ABLATION_FID.get)


def adaptive_norms_lead(mean_fid: dict[str, float]) -> bool:
    """The paper's coarser finding: adaLN and adaLN-Zero both beat in-context and cross-attention."""
    return max(mean_fid["adaln"], mean_fid["adaln_zero"]) < min(mean_fid["in_context"], mean_fid["cross_attention"])


def scaling_sweep(grid=SCALING_GRID, seed: int = 0, steps: int = STUDY_STEPS, cache: str | Path | None = None,
                  eval_images: int = EVAL_IMAGES) -> list[dict[str, Any]]:
    """Every (width, patch) configuration of ``grid`` trained for the same steps: one run each."""
    return [train_and_evaluate(dict(network), seed, steps, eval_images, cache, **STUDY_TRAINING) for network in grid]


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation of two equally long lists (average ranks for ties)."""
    checks.positive_int("len(x)", len(x), 2)
    if len(x) != len(y):
        raise ValueError(f"y: expected {len(x)} values like x, got {len(y)}")

    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        i = 0
        while i < len(order):  # a run of ties shares the mean of its ranks
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(list(x)), ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = sum((a - mx) ** 2 for a in rx) ** 0.5
    sy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (sx * sy) if sx > 0 and sy > 0 else float("nan")
