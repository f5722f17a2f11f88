"""The zoo and its judge: shipped weights verified and accurate, clear errors, deterministic retraining.

The judge's unit tests (shapes, gradients, bad input) live here too, next to the zoo entry that
ships it.
"""

import shutil
import subprocess
import sys

import pytest
import torch

from handbook import judge as judge_module
from handbook import shapeworld, zoo
from handbook.checkpoints import MANIFEST_FIELDS, sha256_of
from handbook.device import make_generator
from handbook.judge import Judge, JudgeConfig, augment

# The bar the shipped judge must clear on clean test renders (shape and colour jointly).
ACCURACY_BAR = 0.98
# The view (above, the side, below) on clean test renders of the shapes that show it: a sphere
# looks the same from everywhere (judge.VIEW_BLIND_SHAPES), its view is a guess for anyone.
VIEW_ACCURACY_BAR = 0.9
FRESH_TEST_IMAGES = 500
FRESH_TEST_SEED = 1  # not the seed the manifest's accuracies were measured with


# ------------------------------------------------------------------------------------ the judge


def test_judge_label_counts_agree_with_shapeworld():
    assert judge_module.NUM_SHAPES == len(shapeworld.SHAPES)
    assert judge_module.NUM_COLOURS == len(shapeworld.COLOURS)
    assert judge_module.NUM_SIZES == len(shapeworld.SIZES)
    assert judge_module.NUM_VIEWS == len(shapeworld.VIEWS)


@pytest.mark.parametrize("config", [JudgeConfig.tiny(), JudgeConfig.small()])
def test_judge_shapes_and_every_parameter_gets_a_gradient(config):
    model = Judge(config, generator=make_generator(0))
    images = torch.rand(2, 3, 32, 32, generator=make_generator(1))
    out = model(images)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"shape": (2, 5), "colour": (2, 6), "size": (2, 2), "view": (2, 3)}
    assert model.features(images).shape == (2, config.feature_dim)
    sum(v.sum() for v in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_judge_init_is_fixed_by_the_generator_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b = Judge(JudgeConfig.tiny(), generator=make_generator(0)), Judge(JudgeConfig.tiny(), generator=make_generator(0))
    assert torch.equal(torch.get_rng_state(), state)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    c = Judge(JudgeConfig.tiny(), generator=make_generator(1))
    assert not torch.equal(a.shape_head.weight, c.shape_head.weight)


def test_judge_rejects_bad_input():
    model = Judge(JudgeConfig.tiny(), generator=make_generator(0))
    with pytest.raises(ValueError, match=r"images: expected a 4-D float tensor \(B, 3, 32, 32\)"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="images"):
        model(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="images: expected a 4-D float tensor"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.features(torch.full((2, 3, 32, 32), 1.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ValueError, match="norm_groups"):
        JudgeConfig(channels=(6, 16, 16), norm_groups=4)
    with pytest.raises(ValueError, match="resolution"):
        JudgeConfig(resolution=36)
    with pytest.raises(ValueError, match="model"):
        judge_module.train_judge(steps=1, model="enormous", progress=False)
    with pytest.raises(ValueError, match="unknown training options"):
        judge_module.train_judge(steps=1, n_trian=10, progress=False)


def test_judge_config_is_frozen_and_survives_json():
    config = JudgeConfig.small()
    with pytest.raises(Exception):
        config.feature_dim = 3
    import json

    assert JudgeConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_augment_is_deterministic_small_and_in_range():
    images = shapeworld.load_images("test", n=8, resolution=32, seed=0).images
    out1 = augment(images, max_shift=2, max_noise=0.03, generator=make_generator(0))
    out2 = augment(images, max_shift=2, max_noise=0.03, generator=make_generator(0))
    assert torch.equal(out1, out2) and out1.shape == images.shape
    assert 0.0 <= out1.min() and out1.max() <= 1.0
    assert torch.equal(augment(images, max_shift=0, max_noise=0.0, generator=make_generator(0)), images)
    # A pure shift moves pixels without changing them: the background corner stays background.
    shifted = augment(images, max_shift=2, max_noise=0.0, generator=make_generator(0))
    assert torch.equal(shifted[:, :, 0, 0], images[:, :, 0, 0])


# ------------------------------------------------------------------------------ the shipped judge


def test_shipped_judge_is_verified_in_eval_mode_and_accurate_on_fresh_renders():
    state = torch.get_rng_state()
    model = zoo.load("judge")
    assert torch.equal(torch.get_rng_state(), state), "loading must not move the global RNG"
    assert isinstance(model, Judge) and not model.training
    meta = zoo.manifest("judge")
    assert meta["sha256"] == sha256_of(zoo.WEIGHTS_DIR / "judge.safetensors")
    assert (zoo.WEIGHTS_DIR / "judge.safetensors").stat().st_size < 2 * 1024 * 1024

    data = shapeworld.load_images("test", n=FRESH_TEST_IMAGES, resolution=32, seed=FRESH_TEST_SEED)
    with torch.no_grad():
        pred = model.predict(data.images)
    both = ((pred["shape"] == data.shape) & (pred["colour"] == data.colour)).float().mean().item()
    assert both >= ACCURACY_BAR
    shows_view = judge_module.shows_its_view(data.shape)
    assert (pred["view"] == data.view)[shows_view].float().mean().item() >= VIEW_ACCURACY_BAR


def test_shipped_manifest_is_complete():
    meta = zoo.manifest("judge")
    assert set(MANIFEST_FIELDS) <= set(meta)
    assert meta["name"] == "judge" and meta["seed"] == zoo.REGISTRY["judge"].seed
    assert meta["command"] == zoo.REGISTRY["judge"].command(meta["seed"], meta["steps"])
    assert meta["steps"] > 0 and meta["seconds"] > 0 and meta["torch_threads"] >= 1
    metrics = meta["metrics"]
    for key in ("shape", "colour", "size", "view", "shape_and_colour"):
        assert 0.0 <= metrics[f"test_accuracy_{key}"] <= 1.0
    assert metrics["test_accuracy_shape_and_colour"] >= ACCURACY_BAR
    assert metrics["test_accuracy_view_without_spheres"] >= VIEW_ACCURACY_BAR
    assert metrics["reference_fid"] > 0 and metrics["reference_fid_images"] > 0
    assert JudgeConfig.from_dict(meta["config"]["model"]) == JudgeConfig.small()


# ------------------------------------------------------------------------------ the registry

# The modules of the course's networks and recipes: importing the zoo must load none of them.
MODEL_MODULES = ("attention", "transformer", "vit", "unet", "diffusion", "ddpm2d", "ddpm_images", "judge",
                 "denoising", "classification", "embeddings")


def test_importing_the_zoo_loads_no_model_module():
    from handbook.course.layout import modules_loaded_by

    loaded = modules_loaded_by("handbook.zoo")  # in a fresh interpreter
    assert "handbook.zoo" in loaded
    assert not {f"handbook.{name}" for name in MODEL_MODULES} & set(loaded), loaded


def test_entry_defaults_are_those_of_its_trainer():
    from handbook import ddpm_images

    judge_entry, ddpm_entry = zoo.REGISTRY["judge"], zoo.REGISTRY[ddpm_images.NAME]
    assert (judge_entry.seed, judge_entry.steps) == (0, judge_module.DEFAULT_STEPS) == (0, 800)
    assert (ddpm_entry.seed, ddpm_entry.steps) == (0, ddpm_images.DEFAULT_STEPS) == (0, 8000)
    assert judge_entry.command() == "python -m handbook.zoo train judge --seed 0 --steps 800"
    assert [entry.name for entry in zoo.SHIPPED] == list(zoo.REGISTRY)[: len(zoo.SHIPPED)]


# --------------------------------------------------------------------------------------- errors


@pytest.fixture
def weights_copy(tmp_path):
    """A copy of the shipped judge files in tmp_path: tests damage the copy, never the originals."""
    for suffix in (".safetensors", ".json"):
        shutil.copy(zoo.WEIGHTS_DIR / f"judge{suffix}", tmp_path / f"judge{suffix}")
    return tmp_path


def test_missing_weights_name_the_entry_and_the_command(weights_copy):
    (weights_copy / "judge.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="'judge'") as err:
        zoo.load("judge", weights_dir=weights_copy)
    assert "python -m handbook.zoo train judge" in str(err.value)


def test_corrupt_weights_name_the_entry_and_the_command(weights_copy):
    assert zoo.load("judge", weights_dir=weights_copy) is not None  # the intact copy loads
    path = weights_copy / "judge.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="'judge'.*corrupt") as err:
        zoo.load("judge", weights_dir=weights_copy)
    assert "python -m handbook.zoo train judge" in str(err.value)
    results = zoo.verify(weights_dir=weights_copy)
    assert "corrupt" in results["judge"]


def test_unknown_names_and_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown zoo entry 'nope'.*judge"):
        zoo.load("nope")
    with pytest.raises(ValueError, match="steps"):
        zoo.train_entry("judge", steps=-1, out_dir=tmp_path)
    with pytest.raises(ValueError, match="seed"):
        zoo.train_entry("judge", seed="zero", out_dir=tmp_path)
    with pytest.raises(ValueError, match="entry"):
        zoo.register("judge")
    with pytest.raises(ValueError, match="options"):
        zoo.train_entry("judge", steps=1, out_dir=tmp_path, model=JudgeConfig.tiny())
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- retraining


QUICK = dict(model="tiny", n_train=64, n_test=32, n_fid=16, batch_size=16)


def test_a_quick_training_run_is_deterministic_and_writes_a_complete_manifest(tmp_path):
    metas = [
        zoo.train_entry("judge", seed=3, steps=4, out_dir=tmp_path / run, progress=False, **QUICK)
        for run in ("a", "b")
    ]
    a = (tmp_path / "a" / "judge.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "judge.safetensors").read_bytes()
    assert metas[0]["sha256"] == metas[1]["sha256"]

    meta = metas[0]
    assert set(MANIFEST_FIELDS) <= set(meta)
    assert meta["seed"] == 3 and meta["steps"] == 4 and meta["options"] == QUICK
    assert meta["config"]["training"]["n_train"] == 64
    assert "train_entry('judge', seed=3, steps=4" in meta["command"] and "model='tiny'" in meta["command"]
    assert {"test_accuracy_shape_and_colour", "reference_fid"} <= set(meta["metrics"])
    model = zoo.load("judge", weights_dir=tmp_path / "a")  # the tiny config is rebuilt from the manifest
    assert model.config == JudgeConfig.tiny()

    other = zoo.train_entry("judge", seed=4, steps=4, out_dir=tmp_path / "c", progress=False, **QUICK)
    assert other["sha256"] != meta["sha256"]


def test_cli_list_and_verify(capsys):
    assert zoo.main(["list"]) == 0
    assert "judge" in capsys.readouterr().out
    done = subprocess.run([sys.executable, "-m", "handbook.zoo", "verify"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "judge: ok" in done.stdout
