"""The ShapeWorld image data set: fixed train/val/test splits, reproducible, cached.

A *scene* is a discrete key: (shape, colour, size, azimuth, elevation), with the azimuth on a
one-degree grid in [0, 360) and the elevation on a one-degree grid in ELEVATION_RANGE_DEGREES;
the camera distance is always DEFAULT_DISTANCE. That makes NUM_SCENES = 5 * 6 * 2 * 360 * 91
possible scenes.

Each scene belongs to exactly one split, decided by an integer hash of its key (80% train,
10% val, 10% test). So the splits are disjoint *by construction*: no seed, sample size or
resolution can put a test scene into the training set. Drawing a split means drawing keys
uniformly with a seeded generator and keeping those of the split (rejection sampling).

Images are stored with 8 bits per channel, like any image file, and rendering 10,000 of them
takes a second or two. ``load_images`` keeps what it made in memory (the same call returns the
same object) and on disk as safetensors under $HANDBOOK_CACHE/shapeworld (default
~/.cache/handbook/shapeworld); a cache file that fails any check is regenerated.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path

import safetensors.torch
import torch
from torch.utils.data import Dataset

from handbook import checks

from .captions import caption, view_index, view_of
from .classes import class_of
from .geometry import SHAPES, SIZES
from .render import COLOURS, DEFAULT_DISTANCE, render_batch

SPLITS = ("train", "val", "test")
SPLIT_PERCENT = (80, 10, 10)
# Bump when anything that changes the images changes (geometry, camera, shading, sampling), so
# that old cache files are not mistaken for new ones.
DATA_VERSION = 2

AZIMUTH_STEPS = 360                       # one-degree grid over the full turn
ELEVATION_RANGE_DEGREES = (-30, 60)       # from a little below to well above; all three views occur
ELEVATION_STEPS = ELEVATION_RANGE_DEGREES[1] - ELEVATION_RANGE_DEGREES[0] + 1
# Scene keys are mixed-radix numbers; the radices, most significant first.
_KEY_RADICES = (len(SHAPES), len(COLOURS), len(SIZES), AZIMUTH_STEPS, ELEVATION_STEPS)
NUM_SCENES = len(SHAPES) * len(COLOURS) * len(SIZES) * AZIMUTH_STEPS * ELEVATION_STEPS

PIXEL_LEVELS = 255                        # 8-bit images
MEMORY_CACHE_ENTRIES = 8                  # data sets kept in memory (each ~30-150 MB at 32x32)
_FIELDS = ("shape", "colour", "size", "azimuth", "elevation", "distance")


class ShapeWorldImages(Dataset):
    """Images (N, 3, H, W) in [0, 1] with their labels, camera poses and captions.

    Fields: images; shape, colour, size (N,) long indices into SHAPES, COLOURS, SIZES; azimuth,
    elevation (degrees) and distance (N,) float32; captions, a list of N strings; ``view`` (N,)
    long indices into VIEWS, read off the elevation as the captions are. ``dataset[i]``
    is a dict with one item of each: image, shape, colour, size, azimuth, elevation, distance,
    caption.
    """

    def __init__(self, images, shape, colour, size, azimuth, elevation, distance, captions):
        N = images.shape[0]
        for name, value in zip(_FIELDS, (shape, colour, size, azimuth, elevation, distance)):
            if value.shape != (N,):
                raise ValueError(f"{name}: expected shape ({N},), got {tuple(value.shape)}")
        if len(captions) != N:
            raise ValueError(f"captions: expected {N} captions, got {len(captions)}")
        self.images = images
        self.shape, self.colour, self.size = shape, colour, size
        self.azimuth, self.elevation, self.distance = azimuth, elevation, distance
        self.captions = list(captions)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict:
        item = {name: getattr(self, name)[i] for name in _FIELDS}
        return {"image": self.images[i], **item, "caption": self.captions[i]}

    @property
    def view(self) -> torch.Tensor:
        """The view of each image as an index into VIEWS (above, the side, below) -> (N,) long."""
        return view_index(self.elevation)

    @property
    def class_index(self) -> torch.Tensor:
        """One class per (shape, colour) pair: shape * NUM_COLOURS + colour -> (N,) (see classes.py)."""
        return class_of(self.shape, self.colour)

    def __repr__(self) -> str:
        return f"ShapeWorldImages(N={len(self)}, images={tuple(self.images.shape)})"


# ---- scenes and splits ------------------------------------------------------------------------

def scene_keys(shape, colour, size, azimuth_step, elevation_step) -> torch.Tensor:
    """The integer key of each scene (tensors of grid indices) -> (N,) long in [0, NUM_SCENES)."""
    key = torch.zeros_like(torch.as_tensor(shape, dtype=torch.long))
    for index, radix in zip((shape, colour, size, azimuth_step, elevation_step), _KEY_RADICES):
        key = key * radix + torch.as_tensor(index, dtype=torch.long)
    return key


def _hash32(keys: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash that scatters neighbouring keys (int64 arithmetic, never overflows).

    The multiply-xorshift rounds of the well-known "lowbias32" integer hash: every output bit
    depends on every input bit, so the splits look random but are fixed forever.
    """
    mask, multiplier = 0xFFFFFFFF, 0x45D9F3B
    x = keys & mask
    x = ((x >> 16) ^ x) * multiplier & mask
    x = ((x >> 16) ^ x) * multiplier & mask
    return (x >> 16) ^ x


def split_of(keys: torch.Tensor) -> torch.Tensor:
    """The split of each scene key: 0 train, 1 val, 2 test -> (N,) long."""
    bucket = _hash32(keys) % 100
    bounds = torch.tensor(SPLIT_PERCENT).cumsum(0)[:-1]          # percent where val and test begin
    return torch.bucketize(bucket, bounds, right=True)


def _decode(keys: torch.Tensor) -> list[torch.Tensor]:
    """The grid indices of each key, in the order of _KEY_RADICES."""
    indices = []
    for radix in reversed(_KEY_RADICES):
        indices.append(keys % radix)
        keys = keys // radix
    return indices[::-1]


def sample_scenes(split: str, n: int, generator: torch.Generator) -> dict:
    """Draw n scene keys of ``split`` uniformly (rejection sampling) -> dict of (n,) tensors."""
    split_index = checks.choice("split", split, SPLITS)
    keep_fraction = SPLIT_PERCENT[split_index] / 100
    found, count = [], 0
    while count < n:
        # Draw a little more than needed on average, so one or two rounds are enough.
        draws = int((n - count) / keep_fraction * 1.2) + 64
        keys = torch.randint(NUM_SCENES, (draws,), generator=generator)
        keys = keys[split_of(keys) == split_index]
        found.append(keys)
        count += len(keys)
    keys = torch.cat(found)[:n] if found else torch.zeros(0, dtype=torch.long)
    shape, colour, size, azimuth_step, elevation_step = _decode(keys)
    return dict(
        key=keys, shape=shape, colour=colour, size=size,
        azimuth=azimuth_step.float() * (360 / AZIMUTH_STEPS),
        elevation=elevation_step.float() + ELEVATION_RANGE_DEGREES[0],
        distance=torch.full((len(keys),), DEFAULT_DISTANCE),
    )


def _to_float_images(images_uint8: torch.Tensor) -> torch.Tensor:
    # One conversion for fresh and cached data, so that both give bit-identical tensors.
    return images_uint8.float() / PIXEL_LEVELS


def _captions(shape, colour, size, elevation) -> list[str]:
    return [caption(SHAPES[s], COLOURS[c], SIZES[z], view=view_of(e))
            for s, c, z, e in zip(shape.tolist(), colour.tolist(), size.tolist(), elevation.tolist())]


def _generate(split: str, n: int, resolution: int, seed: int) -> tuple[dict, list[str]]:
    scenes = sample_scenes(split, n, torch.Generator().manual_seed(seed))
    rendered = render_batch(scenes["shape"], scenes["colour"], scenes["size"], scenes["azimuth"],
                            scenes["elevation"], scenes["distance"], resolution=resolution)
    tensors = {name: scenes[name] for name in _FIELDS}
    tensors["images_uint8"] = (rendered.images * PIXEL_LEVELS).round().to(torch.uint8)   # (N, 3, H, W)
    return tensors, _captions(scenes["shape"], scenes["colour"], scenes["size"], scenes["elevation"])


# ---- caching -------------------------------------------------------------------------------

_MEMORY: OrderedDict[tuple, ShapeWorldImages] = OrderedDict()


def clear_memory_cache() -> None:
    """Forget the data sets kept in memory (the disk cache stays)."""
    _MEMORY.clear()


def cache_dir() -> Path:
    """Where data sets are cached on disk: $HANDBOOK_CACHE/shapeworld or ~/.cache/handbook/shapeworld."""
    root = os.environ.get("HANDBOOK_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "handbook")
    return Path(root) / "shapeworld"


def _cache_paths(meta: dict) -> tuple[Path, Path]:
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    stem = f"{meta['split']}-n{meta['n']}-r{meta['resolution']}-s{meta['seed']}-{digest}"
    return cache_dir() / f"{stem}.safetensors", cache_dir() / f"{stem}.json"


def _expected_shapes(meta: dict) -> dict:
    n, r = meta["n"], meta["resolution"]
    shapes = {name: ((n,), torch.long if name in ("shape", "colour", "size") else torch.float32) for name in _FIELDS}
    shapes["images_uint8"] = ((n, 3, r, r), torch.uint8)
    return shapes


def _atomic_write(path: Path, data: bytes) -> None:
    # Write next to the target, then rename: a reader sees the old file or the new one, never half.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _write_cache(meta: dict, tensors: dict, captions: list[str]) -> None:
    tensor_path, json_path = _cache_paths(meta)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    data = safetensors.torch.save({name: value.contiguous() for name, value in tensors.items()})
    _atomic_write(tensor_path, data)
    record = {**meta, "sha256": hashlib.sha256(data).hexdigest(), "captions": captions}
    _atomic_write(json_path, json.dumps(record).encode())


def _read_cache(meta: dict) -> tuple[dict, list[str]] | None:
    """The cached tensors and captions, or None if missing or if any check fails."""
    tensor_path, json_path = _cache_paths(meta)
    try:
        record = json.loads(json_path.read_text())
        data = tensor_path.read_bytes()
        if {k: record.get(k) for k in meta} != meta or hashlib.sha256(data).hexdigest() != record["sha256"]:
            return None
        tensors = safetensors.torch.load(data)
        expected = _expected_shapes(meta)
        if set(tensors) != set(expected) or any(
                (tuple(tensors[k].shape), tensors[k].dtype) != expected[k] for k in expected):
            return None
        captions = record["captions"]
        if captions != _captions(tensors["shape"], tensors["colour"], tensors["size"], tensors["elevation"]):
            return None
        return tensors, captions
    except Exception:  # unreadable, truncated, not JSON, not safetensors, ...: regenerate
        return None


def load_images(split: str = "train", n: int = 10_000, resolution: int = 32, seed: int = 0) -> ShapeWorldImages:
    """n ShapeWorld images of one split; the same arguments always give bit-identical tensors.

    Cached in memory (the same call returns the same object: do not modify it in place) and on
    disk. Different seeds draw different scenes of the same split.
    """
    checks.choice("split", split, SPLITS)
    checks.positive_int("n", n, 0)
    checks.positive_int("resolution", resolution, 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    meta = dict(data_version=DATA_VERSION, split=split, n=n, resolution=resolution, seed=seed)
    memory_key = tuple(meta.values())
    if memory_key in _MEMORY:
        _MEMORY.move_to_end(memory_key)
        return _MEMORY[memory_key]

    cached = _read_cache(meta)
    if cached is None:
        cached = _generate(split, n, resolution, seed)
        try:
            _write_cache(meta, *cached)
        except OSError as error:      # a read-only home or a full disk must not stop the course
            warnings.warn(f"shapeworld: could not write the cache in {cache_dir()}: {error}", stacklevel=2)
    tensors, captions = cached
    dataset = ShapeWorldImages(_to_float_images(tensors["images_uint8"]),
                               *(tensors[name] for name in _FIELDS), captions=captions)
    _MEMORY[memory_key] = dataset
    if len(_MEMORY) > MEMORY_CACHE_ENTRIES:
        _MEMORY.popitem(last=False)     # drop the least recently used
    return dataset
