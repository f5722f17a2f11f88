"""The plain-value codec: how values cross between the grader and a student's kernel.

The grader never unpickles anything a student's process wrote: a pickle can run arbitrary code
in the reader, and a returned object can carry methods (``__eq__`` that is always True, a
``__float__`` that lies). Only *plain values* cross, in two files per message:

- ``<stem>.json``: the structure, in JSON, where every non-JSON value is a tagged object
  ``{"$": tag, ...}`` (tags below) and every array is a reference into
- ``<stem>.bin``: the raw bytes of all arrays, back to back, described in the JSON by dtype,
  shape, offset and length. Arrays are rebuilt with ``numpy.frombuffer``: no pickle, no ``.npy``
  header whose shape could ask for terabytes before any byte is read, no zip to bomb.

What can cross (anything else is refused with a clear ValueError):

==================  =========================================================================
Python value        encoding
==================  =========================================================================
None, bool, int,    as themselves (exact types only: a subclass could override ``__eq__``)
str, finite float
nan, inf, -inf      ``{"$": "float", "value": "nan" | "inf" | "-inf"}``
list                a JSON list
tuple, torch.Size   ``{"$": "tuple", "items": [...]}``
dict (str/int keys) ``{"$": "dict", "items": [[key, value], ...]}``
numpy array         ``{"$": "ndarray", "array": i}``
numpy scalar        ``{"$": "npscalar", "array": i}`` (a 0-d array)
torch tensor        ``{"$": "tensor", "array": i, "dtype": "float32", "requires_grad": false}``
torch.Generator     ``{"$": "generator", "array": i}`` (its CPU state, uint8)
==================  =========================================================================

``requires_grad`` crosses as a flag only: the autograd graph stays in the process that built it.
Numeric dtypes only (bool, int, uint, float, complex; bfloat16 travels as float32 and is cast
back). Size, depth and count limits hold on both sides; the reader checks every field before it
allocates anything.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT = "handbook-grading-1"

# numpy dtypes that may cross, by their exact dtype.str (little-endian, no objects, no records).
ARRAY_DTYPES = frozenset({"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8",
                          "<f2", "<f4", "<f8", "<c8", "<c16"})
# torch dtypes that may cross, by name; bfloat16 has no numpy equivalent and travels as float32.
TORCH_DTYPES = {name: getattr(torch, name) for name in (
    "bool", "uint8", "int8", "int16", "int32", "int64",
    "float16", "bfloat16", "float32", "float64", "complex64", "complex128")}
_MAX_NDIM = 32


@dataclass(frozen=True)
class Limits:
    """How much one message may hold (both the writer and the reader enforce them)."""

    array_bytes: int = 512 * 2**20   # all arrays together
    json_bytes: int = 64 * 2**20     # the .json file
    depth: int = 32                  # nesting of lists, tuples and dicts
    items: int = 1_000_000           # values in the structure (each list element counts)


DEFAULT_LIMITS = Limits()


class CodecError(ValueError):
    """A value that cannot cross, or a message that is malformed or too large."""


class _Encoder:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.arrays: list[np.ndarray] = []
        self.generators: list[torch.Generator] = []
        self.items = 0
        self.nbytes = 0

    def encode(self, value, depth: int = 0):
        self.items += 1
        if self.items > self.limits.items:
            raise CodecError(f"too many values (more than {self.limits.items})")
        if depth > self.limits.depth:
            raise CodecError(f"nested more than {self.limits.depth} levels deep")
        kind = type(value)
        if value is None or kind in (bool, int, str):
            return value
        if kind is float:
            return value if math.isfinite(value) else {"$": "float", "value": repr(value)}
        if isinstance(value, np.str_):
            return str(value)
        if kind is list:
            return [self.encode(v, depth + 1) for v in value]
        if kind in (tuple, torch.Size):
            return {"$": "tuple", "items": [self.encode(v, depth + 1) for v in value]}
        if kind is dict:
            return {"$": "dict", "items": [[self._key(k), self.encode(v, depth + 1)] for k, v in value.items()]}
        if isinstance(value, np.generic):
            return {"$": "npscalar", "array": self._array(np.asarray(value), "a numpy scalar")}
        if isinstance(value, np.ndarray):
            return {"$": "ndarray", "array": self._array(value, "an array")}
        if isinstance(value, torch.Tensor):
            return self._tensor(value)
        if isinstance(value, torch.Generator):
            if value.device.type != "cpu":
                raise CodecError(f"a torch.Generator on {value.device} (only CPU generators can cross)")
            self.generators.append(value)
            return {"$": "generator", "array": self._array(value.get_state().numpy(), "a generator state")}
        raise CodecError(f"a value of type {kind.__module__}.{kind.__qualname__} "
                         "(only None, bool, int, float, str, list, tuple, dict, numpy arrays, "
                         "tensors and generators can cross)")

    def _key(self, key):
        if type(key) not in (str, int):
            raise CodecError(f"a dict key of type {type(key).__qualname__} (keys must be str or int)")
        return key

    def _tensor(self, tensor: torch.Tensor) -> dict:
        if tensor.layout != torch.strided:
            raise CodecError(f"a tensor with layout {tensor.layout} (only dense tensors can cross)")
        name = str(tensor.dtype).removeprefix("torch.")
        if name not in TORCH_DTYPES:
            raise CodecError(f"a tensor of dtype {tensor.dtype}")
        plain = tensor.detach().cpu().resolve_conj().resolve_neg()
        if plain.dtype == torch.bfloat16:
            plain = plain.float()
        return {"$": "tensor", "array": self._array(plain.numpy(), "a tensor"), "dtype": name,
                "requires_grad": bool(tensor.requires_grad)}

    def _array(self, array: np.ndarray, what: str) -> int:
        if not array.flags.c_contiguous:
            array = array.copy(order="C")   # (np.ascontiguousarray would turn a 0-d array into 1-d)
        if array.dtype.str not in ARRAY_DTYPES:
            raise CodecError(f"{what} of dtype {array.dtype} (only bool and numeric dtypes can cross)")
        if array.ndim > _MAX_NDIM:
            raise CodecError(f"{what} with {array.ndim} dimensions")
        self.nbytes += array.nbytes
        if self.nbytes > self.limits.array_bytes:
            raise CodecError(f"arrays larger than {self.limits.array_bytes // 2**20} MB in total")
        self.arrays.append(array)
        return len(self.arrays) - 1


class _Decoder:
    def __init__(self, arrays: list[np.ndarray], limits: Limits):
        self.arrays = arrays
        self.limits = limits
        self.generators: list[torch.Generator] = []
        self.items = 0

    def decode(self, obj, depth: int = 0):
        self.items += 1
        if self.items > self.limits.items or depth > self.limits.depth:
            raise CodecError("message too large or too deeply nested")
        kind = type(obj)
        if obj is None or kind in (bool, int, str, float):
            return obj
        if kind is list:
            return [self.decode(v, depth + 1) for v in obj]
        if kind is not dict:
            raise CodecError(f"unexpected JSON value of type {kind.__name__}")
        tag = obj.get("$")
        if tag == "float" and obj.get("value") in ("nan", "inf", "-inf"):
            return float(obj["value"])
        if tag == "tuple":
            return tuple(self.decode(v, depth + 1) for v in self._list(obj, "items"))
        if tag == "dict":
            return {self._key(pair): self.decode(pair[1], depth + 1) for pair in self._list(obj, "items")}
        if tag == "ndarray":
            return self._array(obj)
        if tag == "npscalar":
            array = self._array(obj)
            if array.ndim != 0:
                raise CodecError("a numpy scalar that is not 0-dimensional")
            return array[()]
        if tag == "tensor":
            return self._tensor(obj)
        if tag == "generator":
            return self._generator(obj)
        raise CodecError(f"unknown tag {str(tag)[:40]!r}")

    @staticmethod
    def _list(obj: dict, field: str) -> list:
        value = obj.get(field)
        if type(value) is not list:
            raise CodecError(f"field {field!r} must be a list")
        return value

    @staticmethod
    def _key(pair):
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) not in (str, int):
            raise CodecError("a dict item must be [str or int key, value]")
        return pair[0]

    def _array(self, obj: dict) -> np.ndarray:
        index = obj.get("array")
        if type(index) is not int or not 0 <= index < len(self.arrays):
            raise CodecError(f"array reference {str(index)[:40]} out of range")
        return self.arrays[index]

    def _tensor(self, obj: dict) -> torch.Tensor:
        dtype = TORCH_DTYPES.get(obj.get("dtype"))
        if dtype is None or type(obj.get("requires_grad")) is not bool:
            raise CodecError("a tensor needs a known dtype and a bool requires_grad")
        array = self._array(obj)
        expected = torch.float32 if dtype == torch.bfloat16 else dtype
        tensor = torch.from_numpy(array.copy())
        if tensor.dtype != expected:
            raise CodecError(f"tensor data of dtype {array.dtype} for a {dtype} tensor")
        tensor = tensor.to(dtype)
        if obj["requires_grad"] and (tensor.is_floating_point() or tensor.is_complex()):
            tensor.requires_grad_(True)
        return tensor

    def _generator(self, obj: dict) -> torch.Generator:
        state = self._array(obj)
        if state.dtype != np.uint8 or state.ndim != 1:
            raise CodecError("a generator state must be a 1-d uint8 array")
        generator = torch.Generator(device="cpu")
        try:
            generator.set_state(torch.from_numpy(state.copy()))
        except RuntimeError as error:
            raise CodecError(f"invalid generator state: {error}") from None
        self.generators.append(generator)
        return generator


def to_plain(value, limits: Limits = DEFAULT_LIMITS) -> tuple[object, list[np.ndarray], list[torch.Generator]]:
    """Encode ``value``: (JSON-able structure, the arrays it refers to, the generators met, in order)."""
    encoder = _Encoder(limits)
    return encoder.encode(value), encoder.arrays, encoder.generators


def from_plain(obj, arrays: list[np.ndarray], limits: Limits = DEFAULT_LIMITS) -> tuple[object, list[torch.Generator]]:
    """Decode what :func:`to_plain` made: (the value, the generators it created, in order)."""
    decoder = _Decoder(arrays, limits)
    return decoder.decode(obj), decoder.generators


# -- files -----------------------------------------------------------------------------------

def write_message(directory: str | Path, stem: str, value, limits: Limits = DEFAULT_LIMITS) -> list[torch.Generator]:
    """Write ``value`` as ``<stem>.json`` + ``<stem>.bin`` in ``directory``; return the generators met.

    The .json file appears last and atomically (written aside, then renamed), so a reader that
    finds it finds the whole message.
    """
    directory = Path(directory)
    obj, arrays, generators = to_plain(value, limits)
    specs, offset = [], 0
    with open(directory / f"{stem}.bin", "wb") as out:
        for array in arrays:
            out.write(array.tobytes())
            specs.append({"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset,
                          "nbytes": array.nbytes})
            offset += array.nbytes
    try:
        text = json.dumps({"format": FORMAT, "value": obj, "arrays": specs}, allow_nan=False)
    except ValueError as error:   # e.g. an int with more digits than Python converts to text
        raise CodecError(f"a value that JSON cannot hold: {error}") from None
    if len(text) > limits.json_bytes:
        raise CodecError(f"the structure takes more than {limits.json_bytes // 2**20} MB of JSON")
    partial = directory / f"{stem}.json.partial"
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, directory / f"{stem}.json")
    return generators


def read_message(directory: str | Path, stem: str, limits: Limits = DEFAULT_LIMITS) -> tuple[object, list[torch.Generator]]:
    """Read what :func:`write_message` wrote, trusting nothing in it: (value, generators created).

    Raises CodecError for a missing, oversized, malformed or inconsistent message.
    """
    directory = Path(directory)
    header = _read_regular_file(directory / f"{stem}.json", limits.json_bytes)
    try:
        message = json.loads(header.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:   # bad UTF-8, bad JSON, an int too long
        raise CodecError(f"{stem}.json is not valid JSON: {str(error)[:200]}") from None
    if type(message) is not dict or message.get("format") != FORMAT or type(message.get("arrays")) is not list:
        raise CodecError(f"{stem}.json is not a {FORMAT} message")
    specs = message["arrays"]
    if len(specs) > limits.items:
        raise CodecError(f"{stem}.json declares too many arrays")
    declared = sum(_check_spec(spec) for spec in specs)
    if declared > limits.array_bytes:
        raise CodecError(f"{stem}: arrays larger than {limits.array_bytes // 2**20} MB in total")
    data = _read_regular_file(directory / f"{stem}.bin", limits.array_bytes) if specs else b""
    arrays = []
    for spec in specs:
        if spec["offset"] + spec["nbytes"] > len(data):
            raise CodecError(f"{stem}.bin is shorter than its description")
        flat = np.frombuffer(data, dtype=np.dtype(spec["dtype"]), count=math.prod(spec["shape"]), offset=spec["offset"])
        arrays.append(flat.reshape(spec["shape"]).copy())
    return from_plain(message["value"], arrays, limits)


def _reject_constant(name: str):
    raise CodecError(f"bare {name} in JSON (non-finite floats are tagged)")


def _check_spec(spec) -> int:
    """Validate one array description; return its size in bytes."""
    if type(spec) is not dict or spec.get("dtype") not in ARRAY_DTYPES:
        raise CodecError("an array description needs a supported dtype")
    shape, offset, nbytes = spec.get("shape"), spec.get("offset"), spec.get("nbytes")
    if (type(shape) is not list or len(shape) > _MAX_NDIM or any(type(n) is not int or n < 0 for n in shape)
            or type(offset) is not int or offset < 0 or type(nbytes) is not int):
        raise CodecError("an array description needs a shape of non-negative ints, an offset and nbytes")
    if nbytes != math.prod(shape) * np.dtype(spec["dtype"]).itemsize:
        raise CodecError("an array's nbytes does not match its shape and dtype")
    return nbytes


def _read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a link, FIFO or device) of at most ``max_bytes``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CodecError(f"{path.name} is missing") from None
    except OSError as error:
        raise CodecError(f"{path.name} cannot be opened: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CodecError(f"{path.name} is not a regular file")
        if info.st_size > max_bytes:
            raise CodecError(f"{path.name} is larger than {max_bytes // 2**20} MB")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 24, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise CodecError(f"{path.name} is larger than {max_bytes // 2**20} MB")
        return b"".join(chunks)
    finally:
        os.close(fd)
