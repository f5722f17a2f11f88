"""The caption language of ShapeWorld, and a word-level tokenizer for it.

Every image comes with a caption from a tiny grammar:

    caption := "a" SIZE COLOUR SHAPE [ "seen from" VIEW ]
    VIEW    := "above" | "the side" | "below"

for example "a large red cube" or "a small blue torus seen from above". The language is small
enough to write down completely (5 shapes x 6 colours x 2 sizes x 4 view choices = 240 captions),
which lets the course check *exactly* whether a model's output is grammatical
(``is_valid_caption``) and what it says (``parse_caption``).

The view comes from the camera's elevation (``view_of``): looking down on the object, level with
it, or up at it. The thresholds split the data set's elevation range so that all three occur.

The tokenizer maps each word to an integer id, plus three special tokens: ``<pad>`` fills short
rows of a batch, ``<bos>`` and ``<eos>`` mark the beginning and end of a caption, so that a
language model knows where to start and learns when to stop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from handbook import checks

from .geometry import SHAPES, SIZES
from .render import COLOURS, ELEVATION_LIMIT_DEGREES

VIEWS = ("above", "the side", "below")
# Elevation (degrees) at and above which the camera looks down on the object, and at and below
# which it looks up at it; in between it sees the object from the side. With the data set's
# elevations in [-30, 60] this gives about 45% above, 32% side and 23% below.
ABOVE_FROM_ELEVATION = 20.0
BELOW_FROM_ELEVATION = -10.0

ARTICLE = "a"
VIEW_PREFIX = ("seen", "from")
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"

# The longest caption, counted in tokens including <bos> and <eos>: "a SIZE COLOUR SHAPE seen
# from the side" is 8 words.
_NOUN_PHRASE_WORDS = 4                       # a, size, colour, shape
MAX_CAPTION_TOKENS = 2 + _NOUN_PHRASE_WORDS + len(VIEW_PREFIX) + max(len(v.split()) for v in VIEWS)


def view_of(elevation_degrees: float) -> str:
    """The view phrase ("above", "the side" or "below") for a camera elevation in degrees."""
    elevation = checks.real("elevation_degrees", elevation_degrees, -ELEVATION_LIMIT_DEGREES, ELEVATION_LIMIT_DEGREES)
    if elevation >= ABOVE_FROM_ELEVATION:
        return "above"
    if elevation <= BELOW_FROM_ELEVATION:
        return "below"
    return "the side"


def view_index(elevation_degrees: torch.Tensor) -> torch.Tensor:
    """``view_of`` for a tensor of elevations (degrees): (N,) long indices into VIEWS."""
    elevation = torch.as_tensor(elevation_degrees)
    above, below = elevation >= ABOVE_FROM_ELEVATION, elevation <= BELOW_FROM_ELEVATION
    index = torch.full(elevation.shape, VIEWS.index("the side"), dtype=torch.long)
    return index.masked_fill(above, VIEWS.index("above")).masked_fill(below, VIEWS.index("below"))


def caption(shape: str, colour: str, size: str, view: str | None = None) -> str:
    """The caption of an object, e.g. "a large red cube" or "a large red cube seen from above"."""
    checks.choice("shape", shape, SHAPES)
    checks.choice("colour", colour, COLOURS)
    checks.choice("size", size, SIZES)
    text = f"{ARTICLE} {size} {colour} {shape}"
    if view is None:
        return text
    checks.choice("view", view, VIEWS)
    return f"{text} {' '.join(VIEW_PREFIX)} {view}"


def parse_caption(text: str) -> dict:
    """What a caption says: dict(shape=, colour=, size=, view=None or a VIEW).

    Captions must be exactly in the grammar's form (lower case, single spaces); anything else
    raises ValueError.
    """
    if not isinstance(text, str):
        raise ValueError(f"text: expected a caption string, got {type(text).__name__}")
    words = text.split(" ")
    if len(words) < _NOUN_PHRASE_WORDS or words[0] != ARTICLE:
        raise ValueError(f"text: expected 'a SIZE COLOUR SHAPE [seen from VIEW]', got {text!r}")
    size, colour, shape = words[1:_NOUN_PHRASE_WORDS]
    rest = words[_NOUN_PHRASE_WORDS:]
    if size not in SIZES or colour not in COLOURS or shape not in SHAPES:
        raise ValueError(f"text: expected 'a SIZE COLOUR SHAPE' with SIZE in {SIZES}, COLOUR in "
                         f"{COLOURS}, SHAPE in {SHAPES}; got {text!r}")
    view = None
    if rest:
        prefix, view = rest[: len(VIEW_PREFIX)], " ".join(rest[len(VIEW_PREFIX):])
        if tuple(prefix) != VIEW_PREFIX or view not in VIEWS:
            raise ValueError(f"text: expected the caption to end with 'seen from VIEW', VIEW in {VIEWS}; got {text!r}")
    return dict(shape=shape, colour=colour, size=size, view=view)


def is_valid_caption(text: str) -> bool:
    """True if ``text`` is a caption of the ShapeWorld grammar."""
    try:
        parse_caption(text)
    except ValueError:
        return False
    return True


class CaptionTokenizer:
    """Word-level tokenizer of the caption language.

    ``vocab`` lists the tokens by id: the three special tokens first, then every word of the
    grammar once. ``encode`` accepts any sequence of vocabulary words (not only grammatical
    captions), so that a language model's samples can be decoded and then checked.
    """

    def __init__(self) -> None:
        words = [ARTICLE, *SIZES, *COLOURS, *SHAPES, *VIEW_PREFIX]
        for view in VIEWS:
            words += [w for w in view.split() if w not in words]
        self.vocab: list[str] = [PAD, BOS, EOS, *words]
        self._ids = {token: i for i, token in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id = self._ids[PAD], self._ids[BOS], self._ids[EOS]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of ``text``; with ``add_special`` wrapped in <bos> ... <eos>."""
        if not isinstance(text, str):
            raise ValueError(f"text: expected a string, got {type(text).__name__}")
        ids = []
        for word in text.split():
            # Special tokens are not words: a text that spells out "<pad>" is a mistake.
            if word not in self._ids or word in (PAD, BOS, EOS):
                raise ValueError(f"text: unknown word {word!r} in {text!r}; the vocabulary is {self.vocab[3:]}")
            ids.append(self._ids[word])
        return [self.bos_id, *ids, self.eos_id] if add_special else ids

    def encode_batch(self, texts: Sequence[str], length: int | None = None) -> torch.Tensor:
        """Encode with <bos>/<eos> and right-pad with <pad> to ``length`` -> LongTensor (B, L).

        ``length=None`` pads to the longest text of the batch.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ValueError(f"texts: expected a list of strings, got {type(texts).__name__}")
        rows = [self.encode(text) for text in texts]
        longest = max((len(row) for row in rows), default=0)
        if length is None:
            length = longest
        elif checks.positive_int("length", length, 0) < longest:
            raise ValueError(f"length: expected at least {longest} (the longest encoded text), got {length}")
        batch = torch.full((len(rows), length), self.pad_id, dtype=torch.long)          # (B, L)
        for i, row in enumerate(rows):
            batch[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return batch

    def decode(self, ids) -> str:
        """The text of ``ids`` (a list or 1-D tensor): stops at <eos>, drops <pad> and <bos>."""
        if isinstance(ids, torch.Tensor):
            if ids.ndim != 1:
                raise ValueError(f"ids: expected a 1-D sequence of token ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        words = []
        for token_id in ids:
            if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < self.vocab_size:
                raise ValueError(f"ids: expected token ids in [0, {self.vocab_size}), got {token_id!r}")
            if token_id == self.eos_id:
                break
            if token_id not in (self.pad_id, self.bos_id):
                words.append(self.vocab[token_id])
        return " ".join(words)


NULL_CAPTION = ""  # the empty caption: the null condition of classifier-free guidance (chapters 6-8)


def check_prompt(prompt: str) -> str:
    """``prompt`` if it is a caption of the grammar (or "", the empty caption); else a ValueError that
    names the first word the language does not know and lists the words it does."""
    checks.instance("prompt", prompt, str, "a caption string")
    words = _TOKENIZER.vocab[3:]                                 # the words, without the special tokens
    unknown = [w for w in prompt.split() if w not in words]
    if unknown:
        raise ValueError(f"prompt {prompt!r}: unknown word {unknown[0]!r}; the words are {' '.join(words)}")
    if prompt != NULL_CAPTION and not is_valid_caption(prompt):
        raise ValueError(f"prompt {prompt!r}: expected 'a SIZE COLOUR SHAPE [seen from VIEW]' "
                         f"(e.g. {caption('cube', 'red', 'large', 'above')!r})")
    return prompt


def encode_prompts(prompts: Sequence[str], length: int = MAX_CAPTION_TOKENS) -> torch.Tensor:
    """Caption token ids (B, length) of prompts, each checked by ``check_prompt``, padded with <pad>."""
    checks.items("prompts", prompts, str)
    return _TOKENIZER.encode_batch([check_prompt(p) for p in prompts], length=length)


_TOKENIZER = CaptionTokenizer()
