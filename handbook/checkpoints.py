"""Checkpoints: weights in safetensors, and a JSON manifest that says where they came from.

A checkpoint is two files side by side::

    NAME.safetensors   the tensors, nothing else
    NAME.json          the manifest: how to reproduce the weights and how good they are

Why safetensors and not ``torch.save``: a ``.pt`` file is a pickle, and unpickling runs arbitrary
code, so opening a stranger's checkpoint is as risky as running their script. A safetensors file
is a JSON header plus raw bytes; loading it can only ever give you tensors.

Why a manifest: weights without their recipe cannot be trusted or rebuilt. The manifest records
the command that re-trains them, the seed, the number of steps, the training time, the metrics,
the torch version, the model config, and the SHA-256 of the weights file. ``load_checkpoint``
recomputes that hash, so a truncated download or an edited file is caught with a clear message
instead of surfacing later as a model that quietly produces garbage.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS_SUFFIX = ".safetensors"
MANIFEST_SUFFIX = ".json"
# Read the weights file in 1 MiB pieces when hashing, so large files never sit in memory twice.
_HASH_CHUNK_BYTES = 1 << 20
# Permissions of written files: owner read/write, everyone else read (like any data file).
_FILE_MODE = 0o644
# At most this many key names are spelled out in a mismatch error; the rest are counted.
_MAX_KEYS_IN_MESSAGE = 8

# The fields a manifest records. ``save_checkpoint`` adds the last four itself.
MANIFEST_FIELDS = (
    "name", "command", "seed", "steps", "seconds", "metrics", "config",
    "sha256", "created", "torch_version", "weights",
)


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(NAME.safetensors, NAME.json)`` for ``path`` given with or without either suffix."""
    path = Path(path)
    if path.suffix in (WEIGHTS_SUFFIX, MANIFEST_SUFFIX):
        path = path.with_suffix("")
    return path.with_name(path.name + WEIGHTS_SUFFIX), path.with_name(path.name + MANIFEST_SUFFIX)


def sha256_of(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tensor_dict(model_or_state_dict: nn.Module | dict[str, Any]) -> dict[str, torch.Tensor]:
    if isinstance(model_or_state_dict, nn.Module):
        state = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, dict):
        state = model_or_state_dict
    else:
        raise ValueError(
            f"model_or_state_dict: expected an nn.Module or a dict of tensors, got {type(model_or_state_dict).__name__}"
        )
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        names = _name_keys([repr(k) for k in not_tensors])
        raise ValueError(f"model_or_state_dict: these entries are not tensors: {names}")
    # safetensors wants contiguous CPU tensors that share no memory (tied weights do), so each
    # tensor gets its own contiguous CPU copy.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _json_ready(manifest: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(manifest, dict):
        raise ValueError(f"manifest: expected a dict, got {type(manifest).__name__}")
    for key, value in manifest.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"manifest: the value of {key!r} cannot be written as JSON ({err})") from None
    return dict(manifest)


def _write_atomically(path: Path, write) -> None:
    # Write next to the target, then rename: an interrupted save never leaves half a file behind.
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        # safetensors creates its files readable by the owner only; weights are shared data.
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(
    path: str | os.PathLike,
    model_or_state_dict: nn.Module | dict[str, torch.Tensor],
    manifest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``path.safetensors`` and ``path.json``; return the manifest as written.

    ``manifest`` holds what you know about the run (command, seed, steps, seconds, metrics,
    config, ...); this function adds ``name`` (if missing), ``sha256`` of the weights file,
    ``created`` (UTC, ISO 8601), ``torch_version`` and ``weights`` (the file name).
    """
    manifest = _json_ready(manifest or {})
    tensors = _tensor_dict(model_or_state_dict)
    weights_path, manifest_path = checkpoint_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)

    _write_atomically(weights_path, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    manifest.setdefault("name", weights_path.name[: -len(WEIGHTS_SUFFIX)])
    manifest.update(
        sha256=sha256_of(weights_path),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        torch_version=torch.__version__,
        weights=weights_path.name,
    )
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    _write_atomically(manifest_path, lambda p: p.write_text(text, encoding="utf-8"))
    return manifest


def _name_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_IN_MESSAGE])
    more = len(keys) - _MAX_KEYS_IN_MESSAGE
    return shown + (f" and {more} more" if more > 0 else "")


def check_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise a ValueError naming every missing, unexpected or wrongly shaped key."""
    expected = model.state_dict()
    missing = [repr(k) for k in expected if k not in state_dict]
    unexpected = [repr(k) for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k!r} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_name_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_name_keys(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatch: {_name_keys(wrong_shape)}")
    if problems:
        raise ValueError(
            f"{source} does not fit {type(model).__name__} (was it saved from another config?): " + "; ".join(problems)
        )


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    verify: bool = True,
    device: str | torch.device | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint; return ``(state_dict, manifest)``.

    With ``verify`` (the default) the SHA-256 of the weights file must match the manifest.
    With ``model`` the weights are also loaded into it, after checking every key and shape.
    Raises FileNotFoundError if either file is missing, ValueError if the file is corrupt, its
    hash does not match, or its keys do not fit ``model``.
    """
    weights_path, manifest_path = checkpoint_paths(path)
    for p in (weights_path, manifest_path):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {p} (a checkpoint is NAME.safetensors + NAME.json)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint manifest {manifest_path} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"checkpoint manifest {manifest_path}: expected a JSON object")
    retrain = f" Re-create it with: {manifest['command']}" if manifest.get("command") else ""

    if verify:
        expected = manifest.get("sha256")
        if not expected:
            raise ValueError(f"checkpoint manifest {manifest_path} records no sha256, so the weights cannot be verified")
        actual = sha256_of(weights_path)
        if actual != expected:
            raise ValueError(
                f"checkpoint {weights_path} is corrupt or was modified: its sha256 is {actual}, "
                f"the manifest expects {expected}.{retrain}"
            )
    try:
        state_dict = load_file(str(weights_path), device=str(device) if device is not None else "cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"checkpoint {weights_path} cannot be read as safetensors ({err}).{retrain}") from None

    if model is not None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected an nn.Module or None, got {type(model).__name__}")
        check_state_dict(model, state_dict, source=f"checkpoint {weights_path}")
        model.load_state_dict(state_dict)
    return state_dict, manifest
