"""Diffusion on 2D points: a small MLP noise predictor, its training, and how to score its samples.

Chapter 5 first meets every idea of DDPM on clouds of 2D points (``handbook.shapeworld.points``),
where a model trains in seconds and its samples can simply be plotted. The process itself (the
schedule, the loss, the samplers) is ``handbook.diffusion``; this module holds only what is
specific to 2D:

* ``MLPDenoiser``: ``model(x_t, t, cond) -> (B, 2)``, the noise (or x0) prediction. The timestep
  enters through the sinusoidal ``handbook.embeddings.timestep_embedding`` and an MLP, an optional
  class label through an embedding with one extra row, the null class of classifier-free guidance;
  both are added to the hidden state of every residual block.
* ``NoisyClassifier``: ``classifier(x_t, t) -> logits``, a classifier of *noisy* points, the
  ingredient of classifier guidance (Dhariwal & Nichol 2021).
* ``train_2d`` / ``train_noisy_classifier``: the training loops (``handbook.training.train``).
* ``sample_2d``: DDPM or DDIM from a 2D model, a thin wrapper of ``handbook.diffusion``.
* ``sliced_wasserstein``: a distance between two point clouds, and ``bar_2d``, the chapter's 2D
  bar: the distance from 2,000 samples to held-out data, against that between two held-out sets.
* ``outline_distance``: how far points lie from each outline, to check a class-conditional model.

Training and sampling run on one CPU thread (``one_thread``): the operations of so small a network
gain nothing from a second thread, and on a busy machine waiting for it costs many times the work.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from handbook import diffusion, zoo
from handbook.embeddings import timestep_embedding
from handbook.shapeworld._threads import one_thread
from handbook.shapeworld.points import OUTLINES, load_points, outline_polygon
from handbook.training import mean_of_last, train, warmup_cosine

# The 2D data of the chapter: the five outlines, with a little noise so that the data has a density.
DATA_NOISE = 0.02
TRAIN_POINTS = 20_000
TRAIN_STEPS = 2000
BAR_POINTS = 2000  # samples and held-out points in the 2D bar
# The bar's recipe: a wider network and a longer, larger-batch run than the notebook's quick demo
# (about a minute on two CPU cores instead of ten seconds).
BAR_HIDDEN = 128
BAR_STEPS = 4000
BAR_BATCH = 512
BAR_LR = 2e-3
SW_PROJECTIONS = 256
# Both trainers' learning rate: a linear warm-up over LR_WARMUP steps, then a half cosine down to
# LR_FINAL times the peak (``handbook.training.warmup_cosine``).
LR_WARMUP = 50
LR_FINAL = 0.05


@dataclass(frozen=True)
class MLPConfig:
    """Shape of the 2D denoiser: ``depth`` residual blocks of width ``hidden``."""

    dim: int = 2
    hidden: int = 64
    expansion: int = 2  # the inner width of a block is expansion * hidden
    depth: int = 3
    frequency_dim: int = 32  # width of the sinusoidal timestep code
    num_classes: int | None = None  # labels 0..num_classes-1, plus num_classes = "null"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MLPDenoiser(nn.Module):
    """eps_theta(x_t, t, y): x (B, dim) -> (B, dim).

    h = W_in x; then for each block, h <- h + W_2 SiLU(W_1 LayerNorm(h + e)), where
    e = MLP(timestep_embedding(t)) (+ class embedding). The output layer starts at zero, so a new
    model predicts eps = 0, the mean of what it learns to predict.
    """

    def __init__(self, config: MLPConfig | None = None, seed: int = 0):
        super().__init__()
        self.config = c = config or MLPConfig()
        with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the global stream alone
            torch.manual_seed(seed)
            self.time_embed = nn.Sequential(nn.Linear(c.frequency_dim, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden))
            self.class_embed = None if c.num_classes is None else nn.Embedding(c.num_classes + 1, c.hidden)
            self.inp = nn.Linear(c.dim, c.hidden)
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.LayerNorm(c.hidden), nn.Linear(c.hidden, c.expansion * c.hidden), nn.SiLU(),
                              nn.Linear(c.expansion * c.hidden, c.hidden))
                for _ in range(c.depth))
            self.out = nn.Sequential(nn.LayerNorm(c.hidden), nn.Linear(c.hidden, c.dim))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        B, D = x.shape
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(B) if t.dim() == 0 else t                                    # (B,)
        e = self.time_embed(timestep_embedding(t, self.config.frequency_dim))     # (B, hidden)
        if self.class_embed is not None:
            y = torch.full((B,), self.config.num_classes, device=x.device) if cond is None else cond
            e = e + self.class_embed(torch.as_tensor(y, dtype=torch.long, device=x.device))
        h = self.inp(x)                                                           # (B, hidden)
        for block in self.blocks:
            h = h + block(h + e)                                                  # (B, hidden)
        return self.out(h)                                                        # (B, D)


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of a ``NoisyClassifier`` (its constructor's arguments), kept so that the zoo can rebuild it."""

    num_classes: int
    hidden: int = 64
    depth: int = 2
    frequency_dim: int = 32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NoisyClassifier(nn.Module):
    """log p(y | x_t, t): logits (B, num_classes) for noisy 2D points, for classifier guidance."""

    def __init__(self, num_classes: int, hidden: int = 64, depth: int = 2, frequency_dim: int = 32, seed: int = 0):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.config = ClassifierConfig(num_classes, hidden, depth, frequency_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.time_embed = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            self.inp = nn.Linear(2, hidden)
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))
                for _ in range(depth))
            self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(B) if t.dim() == 0 else t
        e = self.time_embed(timestep_embedding(t, self.frequency_dim))  # (B, hidden)
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h + e)
        return self.head(h)  # (B, K)


def train_2d(points: torch.Tensor, labels: torch.Tensor | None = None, schedule: diffusion.NoiseSchedule | None = None,
             prediction: str = "eps", steps: int = TRAIN_STEPS, batch_size: int = 256, lr: float = 3e-3,
             p_uncond: float = 0.0, seed: int = 0, config: MLPConfig | None = None, progress: bool = False,
             desc: str = "2D DDPM"):
    """Train an ``MLPDenoiser`` on ``points`` (N, 2) with the simple loss; return (model, history).

    With ``labels`` (N,) the model is class-conditional (classes 0..max(label)) and ``p_uncond``
    is the probability that a training label is replaced by the null class (classifier-free guidance).
    Everything random (init, batches, t, eps, dropped labels) follows ``seed``.
    """
    schedule = schedule or diffusion.NoiseSchedule.linear(1000)
    if config is None:
        config = MLPConfig(num_classes=None if labels is None else int(labels.max()) + 1)
    model = MLPDenoiser(config, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    null = config.num_classes

    def next_batch(step: int):
        idx = torch.randint(0, len(points), (batch_size,), generator=generator)
        return points[idx], (None if labels is None else labels[idx])

    def loss_fn(net, batch):
        x0, y = batch
        return diffusion.training_loss(net, schedule, x0, cond=y, generator=generator, prediction=prediction,
                                       p_uncond=p_uncond if y is not None else 0.0, null_cond=null)

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, LR_WARMUP, steps, LR_FINAL))
    with one_thread():
        history = train(model, loss_fn, next_batch, steps, optimizer=optimizer, scheduler=scheduler,
                        progress=progress, desc=desc)
    return model.eval(), history


def train_noisy_classifier(points: torch.Tensor, labels: torch.Tensor, schedule: diffusion.NoiseSchedule | None = None,
                     steps: int = 1500, batch_size: int = 256, lr: float = 3e-3, seed: int = 0,
                     progress: bool = False) -> NoisyClassifier:
    """Train a ``NoisyClassifier`` on x_t ~ q(x_t | x0) at uniform t (cross-entropy)."""
    return _train_noisy_classifier(points, labels, schedule, steps, batch_size, lr, seed, progress)[0]


def _train_noisy_classifier(points, labels, schedule, steps, batch_size, lr, seed, progress):
    """``train_noisy_classifier``, also returning the run's history (for the zoo's report)."""
    schedule = schedule or diffusion.NoiseSchedule.linear(1000)
    model = NoisyClassifier(int(labels.max()) + 1, seed=seed)
    generator = torch.Generator().manual_seed(seed)

    def next_batch(step: int):
        idx = torch.randint(0, len(points), (batch_size,), generator=generator)
        t = torch.randint(0, schedule.T, (batch_size,), generator=generator)
        eps = torch.randn(batch_size, 2, generator=generator)
        return diffusion.q_sample(schedule, points[idx], t, eps), t, labels[idx]

    def loss_fn(net, batch):
        x_t, t, y = batch
        return F.cross_entropy(net(x_t, t), y)

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, LR_WARMUP, steps, LR_FINAL))
    with one_thread():
        history = train(model, loss_fn, next_batch, steps, optimizer=optimizer, scheduler=scheduler,
                        progress=progress, desc="noisy classifier")
    return model.eval(), history


def classifier_log_prob_grad(classifier: NoisyClassifier, x_t: torch.Tensor, t, y: torch.Tensor) -> torch.Tensor:
    """grad_x log p(y | x_t, t) (B, 2): the direction that makes the classifier surer of class y."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        log_p = F.log_softmax(classifier(x, t), dim=-1).gather(1, y[:, None]).sum()
        return torch.autograd.grad(log_p, x)[0]


@torch.no_grad()
def sample_2d(model, schedule: diffusion.NoiseSchedule, n: int, cond: torch.Tensor | None = None,
              sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0,
              guidance_scale: float | None = None, prediction: str = "eps", seed: int = 0,
              return_trajectory: bool = False):
    """n samples (n, 2) from a 2D model: ``"ddpm"`` (all T steps) or ``"ddim"`` (``steps``, ``eta``).

    x0 is clipped to [-1, 1] in both samplers (the data lives there). With ``guidance_scale`` the
    model must be conditional; the null class is ``model.config.num_classes``.
    """
    generator = torch.Generator().manual_seed(seed)
    null = getattr(getattr(model, "config", None), "num_classes", None)
    kwargs = dict(cond=cond, generator=generator, guidance_scale=guidance_scale,
                  null_cond=null if guidance_scale is not None else None, prediction=prediction,
                  return_trajectory=return_trajectory, progress=False)
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler: expected 'ddpm' or 'ddim', got {sampler!r}")
    with one_thread():
        if sampler == "ddpm":
            return diffusion.ddpm_sample(model, schedule, (n, 2), **kwargs)
        return diffusion.ddim_sample(model, schedule, (n, 2), steps=steps or 50, eta=eta, clip_x0=True, **kwargs)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_projections: int = SW_PROJECTIONS,
                       generator: torch.Generator | None = None) -> float:
    """The sliced 2-Wasserstein distance between point clouds a (N, D) and b (M, D).

    Project both on ``n_projections`` random unit directions; in 1D the optimal transport pairs
    sorted values, so W2^2 along a direction is the mean squared gap between matching quantiles.
    Returns sqrt(mean over directions of W2^2). Unequal sizes are compared at max(N, M) quantiles.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a, b: expected (N, D) and (M, D) tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(a) == 0 or len(b) == 0:
        raise ValueError("a, b: expected at least one point each")
    theta = torch.randn(n_projections, a.shape[1], generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)                               # (P, D) unit directions
    pa = (a.double() @ theta.T).sort(dim=0).values                               # (N, P)
    pb = (b.double() @ theta.T).sort(dim=0).values                               # (M, P)
    if len(a) != len(b):
        k = max(len(a), len(b))
        levels = (torch.arange(k, dtype=torch.float64) + 0.5) / k
        pa, pb = _quantiles(pa, levels), _quantiles(pb, levels)                  # (k, P) each
    return ((pa - pb) ** 2).mean().sqrt().item()


def _quantiles(sorted_values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of sorted columns (N, P) at quantile levels (k,) -> (k, P)."""
    n = len(sorted_values)
    pos = (levels * n - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(n - 1)
    w = (pos - lo)[:, None]
    return sorted_values[lo] * (1 - w) + sorted_values[hi] * w


def outline_distance(points: torch.Tensor, outlines: Sequence[str] = OUTLINES) -> torch.Tensor:
    """Distance (N, K) from each point to each outline (the closed polygons of the data)."""
    columns = []
    for name in outlines:
        v = outline_polygon(name)                                          # (V, 2)
        w = torch.roll(v, -1, dims=0)
        seg = w - v                                                        # (V, 2)
        rel = points[:, None, :] - v[None]                                 # (N, V, 2)
        u = ((rel * seg).sum(-1) / (seg * seg).sum(-1).clamp_min(1e-12)).clamp(0, 1)   # (N, V)
        nearest = v[None] + u[..., None] * seg[None]                      # (N, V, 2)
        columns.append((points[:, None, :] - nearest).norm(dim=-1).amin(dim=1))        # (N,)
    return torch.stack(columns, dim=1)


def bar_2d(seed: int = 0, n: int = BAR_POINTS, steps: int = BAR_STEPS) -> dict[str, float]:
    """The chapter's 2D bar: train a model on all five outlines (unconditional, linear schedule,
    T = 1000; width BAR_HIDDEN, BAR_STEPS steps of BAR_BATCH points), draw n DDPM samples, and
    compare sliced Wasserstein distances.

    Returns ``sw_model`` (samples vs held-out), ``sw_data`` (held-out vs another held-out set of the
    same size), ``ratio`` = sw_model / sw_data (the bar: at most 2), ``sw_ddim_full`` (deterministic
    DDIM with all T steps, the same model and starting noise) with ``ddim_full_over_ddpm`` =
    sw_ddim_full / sw_model (the bar: at most 1.3), and the training seconds.
    """
    points, _ = load_points(TRAIN_POINTS, noise=DATA_NOISE, seed=seed)
    held_a, _ = load_points(n, noise=DATA_NOISE, seed=seed + 1001)
    held_b, _ = load_points(n, noise=DATA_NOISE, seed=seed + 1002)
    schedule = diffusion.NoiseSchedule.linear(1000)
    start = time.perf_counter()
    model, _ = train_2d(points, schedule=schedule, steps=steps, batch_size=BAR_BATCH, lr=BAR_LR, seed=seed,
                        config=MLPConfig(hidden=BAR_HIDDEN))
    train_seconds = time.perf_counter() - start
    samples = sample_2d(model, schedule, n, seed=seed)
    ddim_full = sample_2d(model, schedule, n, sampler="ddim", steps=schedule.T, seed=seed)

    def sw_to_held_out(points: torch.Tensor) -> float:   # the same projections for every set
        return sliced_wasserstein(points, held_a, generator=torch.Generator().manual_seed(seed))

    sw_model, sw_data, sw_ddim_full = sw_to_held_out(samples), sw_to_held_out(held_b), sw_to_held_out(ddim_full)
    return {"sw_model": sw_model, "sw_data": sw_data, "ratio": sw_model / sw_data, "sw_ddim_full": sw_ddim_full,
            "ddim_full_over_ddpm": sw_ddim_full / sw_model, "train_seconds": train_seconds}


# ---- chapter 5's exercise models, shipped in the zoo ----------------------------------------------
# Exercises 1, 2 and 4 of chapter 5 compare the model of section 3 with 2D models trained the same way
# but for one change (x0 prediction; the cosine schedule; class labels with label dropout), and use a
# classifier of noisy points. Training them is not the exercise (the cells say "given"), and it took
# half of the chapter's run time, so they ship in the zoo. Trained here with the chapter's data, seed
# and steps on one thread, they are bit for bit the models the notebook used to train itself.
EXPERIMENT_STEPS = 1500   # the notebook's STEPS_2D, the quick run of section 3
CLASSIFIER_STEPS = 800
DATA_SEED = 0             # the chapter's SEED: its training points


@dataclass(frozen=True)
class ExperimentTraining:
    """How an exercise model of chapter 5 is trained, beyond its seed and steps (``train_2d``'s arguments)."""

    prediction: str = "eps"
    schedule: str = "linear"    # "linear" or "cosine", T = 1000
    conditional: bool = False   # trained on the labels (each point's outline) too, with label dropout p_uncond
    p_uncond: float = 0.0
    batch_size: int = 256
    lr: float = 3e-3
    train_points: int = TRAIN_POINTS
    data_noise: float = DATA_NOISE
    data_seed: int = DATA_SEED


def build_denoiser(config: dict[str, Any] | None = None) -> MLPDenoiser:
    """The zoo's builder of a 2D denoiser: an untrained ``MLPDenoiser`` from the manifest's model config."""
    return MLPDenoiser(MLPConfig(**config) if config else MLPConfig())


def build_classifier(config: dict[str, Any] | None = None) -> NoisyClassifier:
    """The zoo's builder of the noisy classifier, from the manifest's model config."""
    return NoisyClassifier(**(config or {"num_classes": len(OUTLINES)}))


def train_x0_model(seed: int = 0, steps: int = EXPERIMENT_STEPS, progress: bool = True) -> dict[str, Any]:
    """Exercise 1's model: section 3's recipe, predicting x0 instead of eps."""
    return _train_experiment(ExperimentTraining(prediction="x0"), seed, steps, progress)


def train_cosine_model(seed: int = 0, steps: int = EXPERIMENT_STEPS, progress: bool = True) -> dict[str, Any]:
    """Exercise 2's model: section 3's recipe on the cosine schedule."""
    return _train_experiment(ExperimentTraining(schedule="cosine"), seed, steps, progress)


def train_conditional_model(seed: int = 0, steps: int = EXPERIMENT_STEPS, progress: bool = True) -> dict[str, Any]:
    """Exercise 4's model: conditioned on the outline, which is dropped for 20% of the points (the null class)."""
    return _train_experiment(ExperimentTraining(conditional=True, p_uncond=0.2), seed, steps, progress)


def train_classifier_model(seed: int = 0, steps: int = CLASSIFIER_STEPS, progress: bool = True) -> dict[str, Any]:
    """Exercise 4's classifier of noisy points, for classifier guidance."""
    training = ExperimentTraining()
    points, labels, schedule, data_seconds = _experiment_data(training)
    model, history = _train_noisy_classifier(points, labels, schedule, steps, training.batch_size, training.lr,
                                             seed, progress)
    return _experiment_report(model, history, training, data_seconds)


def _experiment_data(training: ExperimentTraining):
    """The chapter's training points, their labels and the noise schedule of ``training``."""
    start = time.perf_counter()
    points, labels = load_points(training.train_points, noise=training.data_noise, seed=training.data_seed)
    schedules = {"linear": diffusion.NoiseSchedule.linear, "cosine": diffusion.NoiseSchedule.cosine}
    if training.schedule not in schedules:
        raise ValueError(f"schedule: expected one of {sorted(schedules)}, got {training.schedule!r}")
    return points, labels, schedules[training.schedule](1000), time.perf_counter() - start


def _train_experiment(training: ExperimentTraining, seed: int, steps: int, progress: bool) -> dict[str, Any]:
    points, labels, schedule, data_seconds = _experiment_data(training)
    model, history = train_2d(points, labels if training.conditional else None, schedule=schedule,
                              prediction=training.prediction, steps=steps, batch_size=training.batch_size,
                              lr=training.lr, p_uncond=training.p_uncond, seed=seed, progress=progress)
    return _experiment_report(model, history, training, data_seconds)


def _experiment_report(model: nn.Module, history, training: ExperimentTraining, data_seconds: float) -> dict[str, Any]:
    # The final loss is what the chapter prints beside its own model's; both trainers run on one thread.
    metrics = {"final_train_loss_avg100": mean_of_last(history.losses, 100)}
    return zoo.training_report(model, history, metrics, training, data_seconds, threads=1, T=1000)
