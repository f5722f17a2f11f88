"""Chapter 6's text-to-image recipe (handbook.dit_images): captions in, a trained DiT and its report out."""

import torch

from handbook import dit_images, metrics, shapeworld, judge as judge_module
from handbook.shapeworld import VIEWS, parse_caption

TINY = dict(hidden_size=32, depth=1, n_heads=2, caption_layers=1, frequency_dim=16, patch_size=8)


def test_drop_views_removes_only_the_view_and_follows_the_generator():
    captions = ["a large red cube seen from above"] * 200
    out = dit_images.drop_views(captions, 0.25, torch.Generator().manual_seed(0))
    assert {parse_caption(c)["view"] for c in out} == {"above", None}
    assert all(parse_caption(c)["shape"] == "cube" and parse_caption(c)["size"] == "large" for c in out)
    assert 0.15 < sum(parse_caption(c)["view"] is None for c in out) / 200 < 0.35
    assert out == dit_images.drop_views(captions, 0.25, torch.Generator().manual_seed(0))


def test_balanced_prompts_cover_every_class_and_view():
    prompts = dit_images.balanced_prompts(180)
    said = [parse_caption(p) for p in prompts]
    assert len({(s["shape"], s["colour"], s["size"]) for s in said}) == 60
    assert {s["view"] for s in said} == {"above", "the side", "below"}
    assert len(set(prompts)) == 180
    assert all(parse_caption(p)["view"] is None for p in dit_images.balanced_prompts(5, views=False))


def test_a_short_run_trains_reports_and_samples_deterministically():
    runs = [dit_images.train_model(seed=0, steps=3, progress=False, evaluate_after=False, config=TINY,
                                   n_train=64, batch_size=8) for _ in range(2)]
    report = runs[0]
    assert report["steps"] == 3 and len(report["history"].losses) == 3
    assert report["config"]["model"]["hidden_size"] == 32 and report["config"]["training"]["p_no_view"] == 0.25
    for a, b in zip(runs[0]["model"].state_dict().values(), runs[1]["model"].state_dict().values()):
        assert torch.equal(a, b)
    images = dit_images.sample(report["model"], ["a small blue torus seen from below", "a large red cube"], steps=2)
    assert images.shape == (2, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    judge = judge_module.Judge(judge_module.JudgeConfig()).eval()
    scores = dit_images.evaluate(report["model"], n=6, steps=2, fid_reference=16, judge=judge)
    assert set(scores) == {"recognition", "shape", "colour", "size", "view", "fid", "n", "seconds"}
    assert 0 <= scores["recognition"] <= min(scores["shape"], scores["colour"], scores["size"]) <= 1


def test_the_real_render_yardstick_is_read_as_its_captions_say():
    real = dit_images.real_reference(n=60, fid_reference=200)
    assert real["recognition"] >= 0.95 and real["view"] >= 0.9 and real["n"] == 60
    # real against real: only the bias of a 60-image FID, far below that of 60 noise images
    reference = shapeworld.load_images("test", n=200, resolution=32, seed=0).images
    noise = torch.rand(60, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert 0 < real["fid"] < 0.5 * metrics.shapeworld_fid(noise, reference)


def test_view_following_leaves_out_the_spheres():
    # the first 12 balanced prompts are spheres (6 colours x 2 sizes), whose view no render shows
    prompts = dit_images.balanced_prompts(13)
    assert [parse_caption(p)["shape"] for p in prompts] == ["sphere"] * 12 + ["cube"]
    labels = dit_images._labels_of(prompts)
    assert labels["view"].tolist() == [VIEWS.index(parse_caption(p)["view"]) for p in prompts]
