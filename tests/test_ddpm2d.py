"""The 2D diffusion helpers of chapter 5: the MLP denoiser, its training, sampling and the metrics."""

import math

import pytest
import torch

from handbook import ddpm2d, diffusion
from handbook.device import make_generator
from handbook.shapeworld import OUTLINES, load_points, outline_points


def test_mlp_shapes_zero_init_and_every_parameter_gets_a_gradient():
    model = ddpm2d.MLPDenoiser(ddpm2d.MLPConfig(num_classes=5), seed=0)
    x, t = torch.randn(7, 2, generator=make_generator(0)), torch.randint(0, 1000, (7,), generator=make_generator(1))
    y = torch.tensor([0, 1, 2, 3, 4, 5, 5])  # 5 is the null class
    assert torch.equal(model(x, t, y), torch.zeros(7, 2))  # the output layer starts at zero
    torch.nn.init.normal_(model.out[1].weight, generator=make_generator(2))
    out = model(x, t, y)
    assert out.shape == (7, 2) and torch.isfinite(out).all()
    out.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model(x, t, None).shape == (7, 2)  # None means the null class
    assert model(x, torch.tensor(3), y).shape == (7, 2)  # one t for the whole batch


def test_mlp_init_is_seeded_and_leaves_the_global_stream_alone():
    state = torch.random.get_rng_state()
    a, b = ddpm2d.MLPDenoiser(seed=3), ddpm2d.MLPDenoiser(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_sliced_wasserstein_known_values():
    a = torch.randn(500, 2, generator=make_generator(0))
    g = make_generator(1)
    assert ddpm2d.sliced_wasserstein(a, a, generator=g) == pytest.approx(0.0, abs=1e-12)
    # A shift by v moves every projection by <theta, v>: SW^2 = mean over directions of <theta, v>^2 = |v|^2 / 2 in 2D.
    shift = torch.tensor([0.3, -0.4])
    sw = ddpm2d.sliced_wasserstein(a, a + shift, n_projections=4000, generator=make_generator(2))
    assert sw == pytest.approx(0.5 / math.sqrt(2), rel=0.03)
    # Unequal sizes: same distribution, so small; symmetric up to the directions drawn.
    b = torch.randn(800, 2, generator=make_generator(3))
    assert ddpm2d.sliced_wasserstein(a, b, generator=make_generator(4)) < 0.2 < sw
    with pytest.raises(ValueError, match="expected"):
        ddpm2d.sliced_wasserstein(a, torch.randn(5, 3))


def test_outline_distance_is_zero_on_the_outline():
    pts = outline_points(50, "star", generator=make_generator(0))
    dist = ddpm2d.outline_distance(pts)
    assert dist.shape == (50, len(OUTLINES))
    assert dist[:, OUTLINES.index("star")].max() < 1e-4
    assert (dist.argmin(1) == OUTLINES.index("star")).float().mean() > 0.8


def test_training_lowers_the_loss_and_is_deterministic():
    points, labels = load_points(2000, noise=0.02, seed=0)
    schedule = diffusion.NoiseSchedule.linear(100)
    m1, h1 = ddpm2d.train_2d(points, labels, schedule=schedule, steps=60, batch_size=64, p_uncond=0.2, seed=0)
    m2, h2 = ddpm2d.train_2d(points, labels, schedule=schedule, steps=60, batch_size=64, p_uncond=0.2, seed=0)
    assert h1.losses == h2.losses
    assert sum(h1.losses[-10:]) < sum(h1.losses[:10])
    assert m1.config.num_classes == len(OUTLINES)
    x = ddpm2d.sample_2d(m1, schedule, 16, cond=torch.zeros(16, dtype=torch.long), sampler="ddim", steps=10,
                         guidance_scale=2.0, seed=0)
    assert x.shape == (16, 2) and torch.isfinite(x).all()
    assert torch.equal(x, ddpm2d.sample_2d(m1, schedule, 16, cond=torch.zeros(16, dtype=torch.long), sampler="ddim",
                                           steps=10, guidance_scale=2.0, seed=0))


def test_noisy_classifier_learns_and_its_gradient_has_the_input_shape():
    points, labels = load_points(2000, noise=0.02, seed=0)
    schedule = diffusion.NoiseSchedule.linear(100)
    clf = ddpm2d.train_noisy_classifier(points, labels, schedule=schedule, steps=150, batch_size=128, seed=0)
    t0 = torch.zeros(500, dtype=torch.long)
    with torch.no_grad():
        untrained = torch.nn.functional.cross_entropy(ddpm2d.NoisyClassifier(5, seed=0)(points[:500], t0), labels[:500])
        trained = torch.nn.functional.cross_entropy(clf(points[:500], t0), labels[:500])
    assert trained < untrained - 0.05
    grad = ddpm2d.classifier_log_prob_grad(clf, points[:8], torch.full((8,), 10), labels[:8])
    assert grad.shape == (8, 2) and torch.isfinite(grad).all()


def test_bad_sampler_name_is_a_clear_error():
    with pytest.raises(ValueError, match="sampler"):
        ddpm2d.sample_2d(ddpm2d.MLPDenoiser(), diffusion.NoiseSchedule.linear(100), 4, sampler="euler")


def test_ddim_with_every_step_is_as_good_as_ddpm_on_a_trained_2d_model():
    # The clipped x0_hat and the eps that explains it must go together: with the unclipped eps
    # kept, DDIM-1000 on this model scored about 4x DDPM's distance (clustered samples).
    points, _ = load_points(ddpm2d.TRAIN_POINTS, noise=ddpm2d.DATA_NOISE, seed=0)
    held_out, _ = load_points(1000, noise=ddpm2d.DATA_NOISE, seed=1001)
    schedule = diffusion.NoiseSchedule.linear(1000)
    model, _ = ddpm2d.train_2d(points, schedule=schedule, steps=2000, batch_size=512, lr=2e-3, seed=0,
                               config=ddpm2d.MLPConfig(hidden=128))

    def sw(points):
        return ddpm2d.sliced_wasserstein(points, held_out, generator=make_generator(0))

    ddpm = sw(ddpm2d.sample_2d(model, schedule, 1000, seed=0))
    ddim_full = sw(ddpm2d.sample_2d(model, schedule, 1000, sampler="ddim", steps=1000, eta=0.0, seed=0))
    assert ddim_full <= 1.3 * ddpm, f"DDIM-1000 {ddim_full:.4f} against DDPM {ddpm:.4f}"


# ------------------------------------------------------------- the exercise models in the zoo

# name -> what its manifest's training config must say (the one change from section 3's recipe)
EXERCISE_ENTRIES = {
    "ddpm2d_x0": {"prediction": "x0", "schedule": "linear", "conditional": False},
    "ddpm2d_cosine": {"prediction": "eps", "schedule": "cosine", "conditional": False},
    "ddpm2d_conditional": {"prediction": "eps", "schedule": "linear", "conditional": True, "p_uncond": 0.2},
    "ddpm2d_classifier": {"schedule": "linear"},
}


@pytest.mark.parametrize("name", sorted(EXERCISE_ENTRIES))
def test_shipped_exercise_models_load_verified_and_their_manifest_config_builds_them(name):
    from handbook import zoo
    from handbook.checkpoints import sha256_of

    meta, entry = zoo.manifest(name), zoo.REGISTRY[name]
    assert meta["command"] == f"python -m handbook.zoo train {name} --seed 0 --steps {entry.steps}"
    assert (meta["seed"], meta["steps"], meta["torch_threads"]) == (0, entry.steps, 1)
    path = zoo.WEIGHTS_DIR / meta["weights"]
    assert sha256_of(path) == meta["sha256"]
    assert path.stat().st_size < 300_000  # small: an MLP of about 60,000 parameters
    training = meta["config"]["training"]
    assert {k: training[k] for k in EXERCISE_ENTRIES[name]} == EXERCISE_ENTRIES[name]
    assert training["data_seed"] == ddpm2d.DATA_SEED and training["train_points"] == ddpm2d.TRAIN_POINTS

    state = torch.get_rng_state()
    model = zoo.load(name)
    assert torch.equal(torch.get_rng_state(), state), "loading must not move the global RNG"
    assert not model.training and model.config.to_dict() == meta["config"]["model"]
    x, t = torch.zeros(3, 2), torch.tensor([0, 500, 999])
    with torch.no_grad():
        out = model(x, t) if name == "ddpm2d_classifier" else model(x, t, None)
    assert out.shape == ((3, len(OUTLINES)) if name == "ddpm2d_classifier" else (3, 2))


def test_the_exercise_entries_default_to_the_chapters_quick_run():
    from handbook import zoo

    steps = {name: zoo.REGISTRY[name].steps for name in EXERCISE_ENTRIES}
    assert steps == {"ddpm2d_x0": 1500, "ddpm2d_cosine": 1500, "ddpm2d_conditional": 1500, "ddpm2d_classifier": 800}
    assert {zoo.REGISTRY[name].seed for name in EXERCISE_ENTRIES} == {0}


def test_an_exercise_recipe_is_the_notebooks_training_call():
    """The zoo's x0 and conditional recipes give, bit for bit, what chapter 5 trained in the notebook."""
    points, labels = load_points(ddpm2d.TRAIN_POINTS, noise=ddpm2d.DATA_NOISE, seed=0)
    report = ddpm2d.train_x0_model(seed=0, steps=5, progress=False)
    model, history = ddpm2d.train_2d(points, prediction="x0", steps=5, seed=0)
    assert report["steps"] == 5 and report["metrics"]["final_train_loss_avg100"] == pytest.approx(sum(history.losses) / 5)
    for (k, v), w in zip(report["model"].state_dict().items(), model.state_dict().values()):
        assert torch.equal(v, w), k
    report = ddpm2d.train_conditional_model(seed=0, steps=5, progress=False)
    model, _ = ddpm2d.train_2d(points, labels=labels, steps=5, p_uncond=0.2, seed=0)
    assert all(torch.equal(v, w) for v, w in zip(report["model"].state_dict().values(), model.state_dict().values()))
    clf = ddpm2d.train_noisy_classifier(points, labels, steps=5, seed=0)
    report = ddpm2d.train_classifier_model(seed=0, steps=5, progress=False)
    assert all(torch.equal(v, w) for v, w in zip(report["model"].state_dict().values(), clf.state_dict().values()))
    assert ddpm2d.build_classifier(report["config"]["model"]).config == clf.config
