"""The model zoo: trained weights shipped with the package, loaded by name, rebuilt by one command.

Some models of the course take longer to train than a chapter may take to run, and some (the
ShapeWorld judge) must be identical for everyone so that scores can be compared. Those are trained
once, stored in ``handbook/weights/NAME.safetensors`` with a manifest ``NAME.json`` (see
``handbook.checkpoints``), and loaded by name::

    judge = zoo.load("judge")            # nn.Module in eval mode, sha256 verified

Every entry can be re-trained from scratch, which rewrites both files::

    python -m handbook.zoo train judge   # [--seed N] [--steps N]
    python -m handbook.zoo list          # what is shipped, with its metrics
    python -m handbook.zoo verify        # recompute every sha256

An entry names its builder and its training function as ``"module:function"`` strings, so that
``SHIPPED`` below lists every shipped model of the course in one place while importing the zoo
imports no model: a model's module is imported only when that model is loaded or trained, or when
its default seed and steps are asked for (they are the defaults of its trainer). A model that
ships weights adds one ``ZooEntry`` to ``SHIPPED``; ``register`` adds one at run time.

- builder: ``build(config: dict) -> nn.Module``, the untrained network from the ``"model"`` part
  of the manifest's config;
- trainer: ``train(seed=, steps=, progress=, **options) -> dict`` with keys ``model``, ``seconds``,
  ``steps``, ``metrics``, ``config`` (``{"model": ..., ...}``) and optionally ``data_seconds``;
  the defaults of its ``seed`` and ``steps`` are the entry's.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from handbook import checks
from handbook.checkpoints import check_state_dict, checkpoint_paths, load_checkpoint, save_checkpoint

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_REPORT_KEYS = ("model", "seconds", "steps", "metrics", "config")


@dataclass(frozen=True)
class ZooEntry:
    """One shipped checkpoint: what it is, how to build its network and how to train it."""

    name: str
    description: str
    builder: str  # "module:function", config dict -> nn.Module
    trainer: str  # "module:function", (seed, steps, progress, **options) -> report dict

    # The default seed and number of steps are read from the trainer's signature rather than
    # written here too: they are part of the training recipe (whose module says why that many
    # steps), so they are written once, there, and the zoo imports that module only when asked.
    @property
    def seed(self) -> int:
        """The default seed of ``train_entry``: the default of the trainer's ``seed``."""
        return _default_of(self.trainer, "seed")

    @property
    def steps(self) -> int:
        """The default number of optimizer steps: the default of the trainer's ``steps``."""
        return _default_of(self.trainer, "steps")

    def command(self, seed: int | None = None, steps: int | None = None, options: dict | None = None) -> str:
        """The shell command that re-creates this entry's weights."""
        seed = self.seed if seed is None else seed
        steps = self.steps if steps is None else steps
        if options:
            # Options have no CLI flags; the reproducing command is then a Python call.
            args = [repr(self.name), f"seed={seed}", f"steps={steps}"] + [f"{k}={v!r}" for k, v in options.items()]
            call = f"train_entry({', '.join(args)})"
            return f'python -c "from handbook.zoo import train_entry; {call}"'
        return f"python -m handbook.zoo train {self.name} --seed {seed} --steps {steps}"


def _resolve(target: str) -> Callable[..., Any]:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def _default_of(target: str, argument: str) -> Any:
    default = inspect.signature(_resolve(target)).parameters[argument].default
    if default is inspect.Parameter.empty:
        raise ValueError(f"{target}: its argument {argument!r} needs a default (the zoo entry's default)")
    return default


# Every model the package ships weights for: name, description, builder, trainer.
SHIPPED = (
    ZooEntry("judge",
             "ShapeWorld judge: CNN that recognises shape, colour and size of 32x32 renders; "
             "its features give the ShapeWorld FID",
             builder="handbook.judge:build_judge", trainer="handbook.judge:train_judge"),
    ZooEntry("ddpm_shapeworld",
             "Chapter 5: class-conditional DDPM (U-Net, 24x24 ShapeWorld, 30 shape x colour classes, "
             "null class for classifier-free guidance, cosine schedule T=1000)",
             builder="handbook.ddpm_images:build", trainer="handbook.ddpm_images:train_model"),
    ZooEntry("dit_shapeworld",
             "Chapter 6: caption-conditioned Diffusion Transformer (adaLN-Zero, 32x32 ShapeWorld, patches of 4, "
             "captions with views through the caption encoder, the empty caption for guidance, cosine schedule "
             "T=1000); chapter 8's coarse prior",
             builder="handbook.dit_images:build", trainer="handbook.dit_images:train_model"),
    ZooEntry("vae_shapeworld",
             "Chapter 7: KL autoencoder (AutoencoderKL's architecture, levels of 16, 32, 64 channels) of 64x64 "
             "ShapeWorld renders into 16x16x4 latents (f = 4), L1 + 1e-6 KL, with its latent scale factor",
             builder="handbook.vae_images:build", trainer="handbook.vae_images:train_model"),
    ZooEntry("ldm_shapeworld",
             "Chapter 7: latent diffusion at 64x64: chapter 6's DiT (adaLN-Zero, patches of 2) on the scaled 16x16x4 "
             "latents of vae_shapeworld, captions with views, the empty caption for guidance, linear schedule "
             "T=1000; chapter 8's fine prior",
             builder="handbook.ldm:build", trainer="handbook.ldm:train_model"),
    # Chapter 5's exercises compare section 3's 2D model with these (given, not the exercise; seconds each).
    ZooEntry("ddpm2d_x0",
             "Chapter 5, exercise 1: 2D DDPM (MLP) on the five outlines that predicts x0 instead of the noise, "
             "linear schedule T=1000",
             builder="handbook.ddpm2d:build_denoiser", trainer="handbook.ddpm2d:train_x0_model"),
    ZooEntry("ddpm2d_cosine",
             "Chapter 5, exercise 2: 2D DDPM (MLP) on the five outlines, cosine schedule T=1000",
             builder="handbook.ddpm2d:build_denoiser", trainer="handbook.ddpm2d:train_cosine_model"),
    ZooEntry("ddpm2d_conditional",
             "Chapter 5, exercise 4: 2D DDPM (MLP) conditioned on the outline (5 classes), label dropout 0.2 "
             "for classifier-free guidance, linear schedule T=1000",
             builder="handbook.ddpm2d:build_denoiser", trainer="handbook.ddpm2d:train_conditional_model"),
    ZooEntry("ddpm2d_classifier",
             "Chapter 5, exercise 4: classifier of noisy 2D points (which outline), for classifier guidance, "
             "linear schedule T=1000",
             builder="handbook.ddpm2d:build_classifier", trainer="handbook.ddpm2d:train_classifier_model"),
    # Chapter 3's exercise 1 measures a ViT against these CNN baselines of the same size (200 steps each).
    *(ZooEntry(f"data_hunger_cnn_{n}",
               f"Chapter 3, exercise 1: SmallCNN baseline the size of ViTConfig.tiny(), trained on {n:,} "
               "standardised 16x16 ShapeWorld renders (shape x colour, 30 classes)",
               builder="handbook.classification:build_cnn", trainer=f"handbook.classification:train_hunger_cnn_{n}")
      for n in (50, 250, 1250)),
)
REGISTRY: dict[str, ZooEntry] = {entry.name: entry for entry in SHIPPED}


def register(entry: ZooEntry) -> ZooEntry:
    """Add an entry to ``REGISTRY`` at run time (a model of one's own); the shipped ones are ``SHIPPED``."""
    checks.instance("entry", entry, ZooEntry)
    REGISTRY[entry.name] = entry
    return entry


def _entry(name: str) -> ZooEntry:
    if name not in REGISTRY:
        raise ValueError(f"name: unknown zoo entry {name!r}; the zoo has {sorted(REGISTRY)}")
    return REGISTRY[name]


def manifest(name: str, weights_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest of a shipped entry (how it was trained, its metrics), without loading weights."""
    entry = _entry(name)
    _, manifest_path = checkpoint_paths(Path(weights_dir or WEIGHTS_DIR) / entry.name)
    if not manifest_path.is_file():
        raise FileNotFoundError(f"zoo entry {name!r}: no manifest at {manifest_path}. Re-train it with: {entry.command()}")
    return json.loads(manifest_path.read_text(encoding="utf-8"))


def load(
    name: str, device: str | torch.device | None = None, weights_dir: str | os.PathLike | None = None
) -> nn.Module:
    """The shipped model ``name`` in eval mode, its weights' sha256 verified (on CPU by default)."""
    entry = _entry(name)
    path = Path(weights_dir or WEIGHTS_DIR) / entry.name
    try:
        state_dict, meta = load_checkpoint(path, verify=True)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"zoo entry {name!r}: weights missing ({err}). Re-train them with: {entry.command()}"
        ) from None
    except ValueError as err:
        raise ValueError(
            f"zoo entry {name!r}: weights cannot be used ({err}). Re-train them with: {entry.command()}"
        ) from None
    # Building a network draws a throwaway init from the global RNG; fork it so that loading a
    # model never changes the random numbers of the notebook that loads it.
    with torch.random.fork_rng(devices=[]):
        model = _resolve(entry.builder)(meta.get("config", {}).get("model"))
    check_state_dict(model, state_dict, source=f"zoo entry {name!r}")
    model.load_state_dict(state_dict)
    return model.to(device if device is not None else "cpu").eval()


def training_report(model: nn.Module, history: Any, metrics: dict[str, Any], training: Any, data_seconds: float,
                    threads: int, **config: Any) -> dict[str, Any]:
    """What a zoo trainer returns for ``train_entry`` to write: the trained model and its ``history``
    (losses, steps, seconds), the ``metrics``, and the config: the model's ``config.to_dict()``, the
    ``training`` dataclass, and the extras in ``config`` (resolution, schedule, ...)."""
    return {
        "model": model,
        "history": history,          # the losses, for a live run's plot (not written to the manifest)
        "seconds": history.seconds,
        "steps": history.steps,
        "metrics": metrics,
        "config": {"model": model.config.to_dict(), "training": asdict(training), **config},
        "data_seconds": data_seconds,
        "torch_threads": threads,
    }


def train_entry(
    name: str,
    seed: int | None = None,
    steps: int | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Train entry ``name`` from scratch and write ``out_dir/NAME.safetensors`` + ``NAME.json``.

    ``out_dir`` defaults to the package's weights folder (this replaces the shipped weights).
    ``options`` go to the entry's trainer (e.g. ``n_train=512`` for a quick check) and are
    recorded in the manifest. Returns the manifest as written.
    """
    entry = _entry(name)
    seed = entry.seed if seed is None else seed
    steps = entry.steps if steps is None else steps
    for arg, value in (("seed", seed), ("steps", steps)):
        checks.positive_int(arg, value, minimum=0)

    try:
        json.dumps(options)
    except (TypeError, ValueError):
        # Checked before training: the options go into the manifest, which is JSON.
        raise ValueError(f"options: expected JSON values (numbers, strings, lists), got {options!r}") from None

    report = _resolve(entry.trainer)(seed=seed, steps=steps, progress=progress, **options)
    missing = [k for k in _REPORT_KEYS if k not in report]
    if missing:
        raise ValueError(f"the trainer of {name!r} returned a report without {missing}")
    meta = {
        "name": entry.name,
        "description": entry.description,
        "command": entry.command(seed, steps, options),
        "seed": seed,
        "steps": report["steps"],
        "seconds": round(report["seconds"], 2),
        "data_seconds": round(report.get("data_seconds", 0.0), 2),
        "metrics": report["metrics"],
        "config": report["config"],
        "options": options,
        # Float results on a CPU depend on the thread count (the order of summation), so a rerun
        # is bit-identical only with the same number of threads.
        # A trainer that sets its own thread count reports it (it restores the caller's on return).
        "torch_threads": report.get("torch_threads", torch.get_num_threads()),
        "device": str(next(report["model"].parameters()).device),
    }
    return save_checkpoint(Path(out_dir or WEIGHTS_DIR) / entry.name, report["model"], meta)


def verify(weights_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Check every entry: its files exist, the sha256 matches, the weights fit the network.

    Returns ``{name: "ok" or the error message}``.
    """
    results = {}
    for name in REGISTRY:
        try:
            load(name, weights_dir=weights_dir)
            results[name] = "ok"
        except (FileNotFoundError, ValueError) as err:
            results[name] = str(err)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handbook.zoo", description="The handbook's shipped checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the entries with their metrics")
    commands.add_parser("verify", help="check the sha256 of every entry's weights")
    train_cmd = commands.add_parser("train", help="re-train an entry from scratch (rewrites its weights)")
    train_cmd.add_argument("name", choices=sorted(REGISTRY))
    train_cmd.add_argument("--seed", type=int, default=None)
    train_cmd.add_argument("--steps", type=int, default=None)
    train_cmd.add_argument("--out-dir", default=None, help="write here instead of handbook/weights/")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, entry in REGISTRY.items():
            print(f"{name}: {entry.description}")
            try:
                meta = manifest(name)
            except FileNotFoundError:
                print("    (no weights shipped)")
                continue
            run = {k: meta.get(k) for k in ("seed", "steps", "seconds", "torch_threads")}
            print("    " + " ".join(f"{k}={v}" for k, v in run.items()) + f" sha256={meta.get('sha256', '')[:12]}")
            for key, value in (meta.get("metrics") or {}).items():
                print(f"    {key} = {round(value, 4) if isinstance(value, float) else value}")
        return 0
    if args.command == "verify":
        results = verify()
        for name, result in results.items():
            print(f"{name}: {result}")
        return 0 if all(r == "ok" for r in results.values()) else 1
    meta = train_entry(args.name, seed=args.seed, steps=args.steps, out_dir=args.out_dir)
    print(json.dumps({k: meta[k] for k in ("name", "steps", "seconds", "metrics", "sha256")}, indent=2))
    return 0


if __name__ == "__main__":
    # Run through the imported module, so that the CLI and library share one REGISTRY.
    from handbook import zoo as _zoo

    sys.exit(_zoo.main())
