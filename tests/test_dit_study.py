"""The DiT paper's studies at our scale (handbook.dit_study): the bookkeeping, and one tiny real run."""

import json

import pytest

from handbook import dit_study as study
from handbook.dit import CONDITIONINGS, DiTConfig, gflops


def test_spearman_matches_known_values():
    assert study.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert study.spearman([1, 2, 3, 4], [9, 7, 5, 1]) == pytest.approx(-1.0)
    # ties share their mean rank: ranks x = 1, 2.5, 2.5, 4 (shifted by one); y = 1, 2, 3, 4
    assert study.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)
    with pytest.raises(ValueError, match="y: expected 3 values"):
        study.spearman([1, 2, 3], [1, 2])


def test_paper_order():
    assert study.paper_order_holds({"in_context": 40, "cross_attention": 30, "adaln": 20, "adaln_zero": 10})
    assert not study.paper_order_holds({"in_context": 10, "cross_attention": 30, "adaln": 20, "adaln_zero": 15})
    swapped = {"in_context": 40, "cross_attention": 41, "adaln": 20, "adaln_zero": 21}
    assert not study.paper_order_holds(swapped) and study.adaptive_norms_lead(swapped)
    assert not study.adaptive_norms_lead({"in_context": 40, "cross_attention": 20, "adaln": 30, "adaln_zero": 10})


def test_grid_spans_costs_and_shares_the_ablation_run():
    costs = [gflops(DiTConfig.shapeworld(**n)) for n in study.SCALING_GRID]
    assert len(study.SCALING_GRID) >= 6 and len(set(costs)) == len(costs)
    # the ablation's adaLN-Zero network is one point of the sweep: one training serves both
    assert {**study.ABLATION_NETWORK, "conditioning": "adaln_zero"} in list(study.SCALING_GRID)
    assert set(study.PAPER_ABLATION_FID) == set(CONDITIONINGS)


def test_a_cached_run_is_read_not_trained(tmp_path):
    network = {"hidden_size": 16, "depth": 1, "n_heads": 2}
    cache = tmp_path / "study.json"
    cache.write_text(json.dumps({study.run_key(network, 3, 7): {"fid": 12.5, "seed": 3}}))
    assert study.train_and_evaluate(network, 3, steps=7, cache=cache) == {"fid": 12.5, "seed": 3}


def test_one_tiny_run_is_trained_evaluated_and_cached(tmp_path):
    network = {"hidden_size": 16, "depth": 1, "n_heads": 2, "patch_size": 8, "caption_layers": 1}
    cache = tmp_path / "study.json"
    # 13 prompts: 12 spheres and a cube, so that the view is measured on one (a NaN would not round-trip)
    run = study.train_and_evaluate(network, 0, steps=2, eval_images=13, cache=cache, n_train=64)
    assert run["steps"] == 2 and run["network"] == network and 0 <= run["recognition"] <= 1
    assert run["fid"] > 0 and run["gflops"] == pytest.approx(gflops(DiTConfig.shapeworld(**network)))
    saved = json.loads(cache.read_text())
    assert list(saved.values()) == [run]
    with pytest.raises(ValueError, match="seed"):
        study.train_and_evaluate(network, -1, steps=2, cache=cache)


def test_the_study_ema_forgets_the_zero_output_start():
    """With the shipped EMA (0.999) a 1,500-step run still averaged 22% of the initial weights, whose
    output is 0, and sampled noise: the study's EMA must have forgotten them by its last step."""
    from handbook.dit_images import TrainingConfig

    decay = study.STUDY_TRAINING["ema_decay"]
    assert TrainingConfig().ema_decay ** 1500 > 0.2          # the failure it fixes
    assert decay ** study.STUDY_STEPS < 1e-3
    assert set(study.STUDY_TRAINING) <= set(TrainingConfig.__dataclass_fields__)
