"""Chapter 5's class-conditional image model: the shipped checkpoint, its config and a tiny sample."""

import torch

from handbook import ddpm_images, zoo
from handbook.checkpoints import sha256_of


def test_shipped_checkpoint_loads_and_its_manifest_verifies():
    meta = zoo.manifest(ddpm_images.NAME)
    assert meta["command"] == f"python -m handbook.zoo train {ddpm_images.NAME} --seed 0 --steps {ddpm_images.DEFAULT_STEPS}"
    for key in ("seed", "steps", "seconds", "metrics", "sha256", "config"):
        assert key in meta
    path = zoo.WEIGHTS_DIR / meta["weights"]
    assert sha256_of(path) == meta["sha256"]
    assert path.stat().st_size < 4_000_000  # a few MB at most
    model = zoo.load(ddpm_images.NAME)
    assert not model.training and model.config.num_classes == ddpm_images.NUM_CLASSES
    assert zoo.verify()[ddpm_images.NAME] == "ok"


def test_builder_matches_the_config_and_the_model_is_small():
    model = ddpm_images.build()
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    x = torch.randn(2, 3, ddpm_images.RESOLUTION, ddpm_images.RESOLUTION)
    out = model(x, torch.tensor([0, 999]), torch.tensor([0, ddpm_images.NULL_CLASS]))
    assert out.shape == x.shape


def test_a_tiny_guided_sample_has_the_judge_shape_and_is_deterministic():
    model = zoo.load(ddpm_images.NAME)
    classes = torch.tensor([0, 17])
    x = ddpm_images.sample(model, classes, sampler="ddim", steps=3, guidance_scale=2.0, seed=0)
    assert x.shape == (2, 3, ddpm_images.RESOLUTION, ddpm_images.RESOLUTION)
    images = ddpm_images.to_judge(x)
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(x, ddpm_images.sample(model, classes, sampler="ddim", steps=3, guidance_scale=2.0, seed=0))


def test_class_index_agrees_with_shapeworld():
    from handbook.shapeworld import load_images

    data = load_images("val", n=20, resolution=32, seed=0)
    assert torch.equal(ddpm_images.class_index(data.shape, data.colour), data.class_index)
    assert ddpm_images.balanced_classes(35).bincount().tolist() == [2] * 5 + [1] * 25


def test_trainer_report_has_the_zoo_keys():
    report = ddpm_images.train_model(seed=0, steps=2, progress=False, evaluate_after=False, n_train=64, batch_size=4)
    assert set(report) >= {"model", "seconds", "steps", "metrics", "config"}
    assert report["steps"] == 2 and report["config"]["model"]["num_classes"] == ddpm_images.NUM_CLASSES


def test_the_manifest_records_the_threads_the_trainer_used(tmp_path):
    """The trainer runs on one thread and restores the caller's count; the manifest must say 1."""
    from handbook import zoo

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        meta = zoo.train_entry(ddpm_images.NAME, steps=2, out_dir=tmp_path, progress=False, evaluate_after=False,
                               n_train=64, batch_size=4)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert meta["torch_threads"] == 1 and meta["steps"] == 2
