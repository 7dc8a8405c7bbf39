"""Built-in toy data sets for the generative families (generated on the fly; nothing is downloaded).

    x, labels = ge.data.ring_of_gaussians(2000, generator=torch.Generator().manual_seed(0))

Shapes: every 2-D generator returns `(x, labels)` with x a float32 tensor of shape (n, 2) and labels an
int64 tensor of shape (n,) naming the component (mode, moon, square) each point came from, so the
same data serves unconditional and class-conditional models. `bars_and_stripes` returns binary
images (n, size * size) (float32 0/1) with labels 0 (bars) / 1 (stripes). Draws come from `generator` (a
torch.Generator; the tensors are made on its device), so a seeded generator gives the same data run
after run; without one, torch's global generator is used.
"""

from __future__ import annotations

import math
import numbers

import torch

from ._checks import positive_int

__all__ = ["ring_of_gaussians", "ring_centres", "two_moons", "checkerboard", "bars_and_stripes"]


def _nonneg(name, v, positive=False):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name}: expected a finite {'positive' if positive else 'non-negative'} number, got {v}")
    return v


def _device(generator):
    if generator is None:
        return torch.device("cpu")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    return generator.device


def ring_centres(modes: int = 8, radius: float = 2.0) -> torch.Tensor:
    """The (modes, 2) float32 mode centres of `ring_of_gaussians`, mode k at angle 2*pi*k/modes."""
    modes = positive_int("modes", modes)
    radius = _nonneg("radius", radius, positive=True)
    angle = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    return (radius * torch.stack([angle.cos(), angle.sin()], dim=1)).float()


def ring_of_gaussians(n: int, *, modes: int = 8, radius: float = 2.0, std: float = 0.05, generator=None):
    """n points from an equal mixture of `modes` isotropic Gaussians (standard deviation `std`)
    centred on a circle of `radius`; labels are the mode indices (see `ring_centres`)."""
    n = positive_int("n", n)
    std = _nonneg("std", std)
    device = _device(generator)
    centres = ring_centres(modes, radius).to(device)
    labels = torch.randint(0, centres.shape[0], (n,), generator=generator, device=device)
    x = centres[labels] + std * torch.randn(n, 2, generator=generator, device=device)
    return x, labels


def two_moons(n: int, *, noise: float = 0.05, generator=None):
    """n points on two interleaved half circles (radius 1; the upper one centred at (0, 0), the
    lower at (1, 0.5)) plus Gaussian noise of standard deviation `noise`; labels say which moon.
    The two moons get n // 2 and n - n // 2 points, in random order."""
    n = positive_int("n", n)
    noise = _nonneg("noise", noise)
    device = _device(generator)
    labels = (torch.arange(n, device=device) % 2)[torch.randperm(n, generator=generator, device=device)]
    theta = math.pi * torch.rand(n, generator=generator, device=device)
    upper = torch.stack([theta.cos(), theta.sin()], dim=1)
    lower = torch.stack([1 - theta.cos(), 0.5 - theta.sin()], dim=1)
    x = torch.where(labels[:, None] == 0, upper, lower)
    x = x + noise * torch.randn(n, 2, generator=generator, device=device)
    return x.float(), labels


def checkerboard(n: int, *, generator=None):
    """n points uniform over the 8 dark squares of a 4x4 board covering [-2, 2]^2 (square (i, j),
    column i and row j counted from the lower left, is dark when i + j is even); labels number the
    dark squares 0..7 in row-major order."""
    n = positive_int("n", n)
    device = _device(generator)
    labels = torch.randint(0, 8, (n,), generator=generator, device=device)
    row = labels // 2
    col = 2 * (labels % 2) + row % 2  # the dark squares of row j start at column j % 2
    corner = torch.stack([col, row], dim=1).float() - 2.0
    x = corner + torch.rand(n, 2, generator=generator, device=device)
    return x, labels


# ----------------------------------------------------------------------------------------------
# text: a small English-like corpus generated from templates, and a character tokenizer

_NOUNS = ("cat", "dog", "bird", "child", "farmer", "teacher", "river", "garden", "house", "king", "queen", "baker",
          "sailor", "horse", "village", "forest", "mountain", "window", "letter", "story", "song", "ship", "road",
          "market", "friend", "doctor", "painter", "lamp", "clock", "bridge")
_ADJECTIVES = ("small", "old", "quiet", "bright", "happy", "tired", "green", "cold", "warm", "gentle", "busy", "little",
               "golden", "dark", "clever", "brave", "young", "strange", "empty", "tall")
_VERBS = (("sees", "saw"), ("finds", "found"), ("likes", "liked"), ("follows", "followed"), ("paints", "painted"),
          ("watches", "watched"), ("helps", "helped"), ("visits", "visited"), ("remembers", "remembered"),
          ("carries", "carried"), ("calls", "called"), ("builds", "built"))
_INTRANSITIVE = (("sleeps", "slept"), ("sings", "sang"), ("waits", "waited"), ("walks", "walked"), ("laughs", "laughed"),
                 ("rests", "rested"), ("works", "worked"), ("dreams", "dreamed"))
_PLACES = ("by the river", "in the garden", "near the old bridge", "at the market", "under the tall trees",
           "on the quiet road", "in the village", "behind the house", "across the green field", "at the window")
_TIMES = ("in the morning", "at night", "every day", "after the rain", "before dinner", "in the spring",
          "on a cold day", "at noon", "in the evening", "once a week")
_CONNECTORS = ("and then", "but", "so", "because", "while", "and")


def _np(rng):
    """A noun phrase: "the (adjective) noun"."""
    noun = rng.choice(_NOUNS)
    if rng.random() < 0.6:
        return f"the {rng.choice(_ADJECTIVES)} {noun}"
    return f"the {noun}"


def _clause(rng, past):
    t = 1 if past else 0
    if rng.random() < 0.6:
        s = f"{_np(rng)} {rng.choice(_VERBS)[t]} {_np(rng)}"
    else:
        s = f"{_np(rng)} {rng.choice(_INTRANSITIVE)[t]}"
    r = rng.random()
    if r < 0.35:
        s += " " + rng.choice(_PLACES)
    elif r < 0.6:
        s += " " + rng.choice(_TIMES)
    return s


def tiny_corpus(n_chars: int = 40_000, *, seed: int = 0) -> str:
    """About n_chars characters of English-like text from templates (lower case, sentences with
    subjects, verbs, objects, places and times, joined into short paragraphs). Deterministic: the
    same seed gives the same text. A small, regular corpus for character-level language models."""
    import random

    n_chars = positive_int("n_chars", n_chars)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    rng = random.Random(int(seed))
    out, size = [], 0
    while size < n_chars:
        para = []
        for _ in range(rng.randint(2, 5)):
            past = rng.random() < 0.5
            s = _clause(rng, past)
            if rng.random() < 0.4:
                s += f" {rng.choice(_CONNECTORS)} {_clause(rng, past)}"
            para.append(s[0].upper() + s[1:] + ("." if rng.random() < 0.9 else "!"))
        text = " ".join(para) + "\n"
        out.append(text)
        size += len(text)
    return "".join(out)[:n_chars]


class CharTokenizer:
    """Characters <-> token ids: ids are the positions of the characters in `alphabet` (sorted).

        tok = ge.data.CharTokenizer.from_text(text)
        ids = tok.encode("the cat")          # int64 [7]
        tok.decode(ids)                      # "the cat"
    """

    def __init__(self, alphabet: str):
        if not isinstance(alphabet, str) or not alphabet:
            raise ValueError("alphabet: expected a non-empty string of characters")
        if len(set(alphabet)) != len(alphabet):
            raise ValueError("alphabet: characters must be distinct")
        self.alphabet = alphabet
        self._index = {c: i for i, c in enumerate(alphabet)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        if not isinstance(text, str) or not text:
            raise ValueError("text: expected a non-empty string")
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> torch.Tensor:
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        try:
            return torch.tensor([self._index[c] for c in text], dtype=torch.int64)
        except KeyError as e:
            raise ValueError(f"text: character {e.args[0]!r} is not in the tokenizer's alphabet") from None

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return "".join(self.alphabet[i] for i in ids if 0 <= i < len(self.alphabet))


__all__ += ["tiny_corpus", "CharTokenizer"]


# ----------------------------------------------------------------------------------------------
# images: small binary seven-segment digits

# segments a..g of a seven-segment display: top, top right, bottom right, bottom, bottom left, top left, middle
_SEGMENTS = {0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg", 5: "acdfg", 6: "acdefg", 7: "abc", 8: "abcdefg",
             9: "abcdfg"}


def binary_digits(n: int, *, size: int = 12, noise: float = 0.01, generator=None):
    """(x, labels): n binary images float32 (n, 1, size, size) in {0, 1} of seven-segment digits
    (int64 labels 0-9), each drawn at a random height, width, stroke (1 or 2 pixels) and position,
    with each pixel flipped with probability `noise`. size >= 10."""
    n = positive_int("n", n)
    size = positive_int("size", size)
    if size < 10:
        raise ValueError(f"size: expected at least 10 pixels, got {size}")
    noise = _nonneg("noise", noise)
    if noise > 0.5:
        raise ValueError(f"noise: expected a flip probability <= 0.5, got {noise}")
    dev = _device(generator)

    def ints(lo, hi):  # uniform integers in [lo, hi] per image
        return torch.randint(lo, hi + 1, (n,), generator=generator, device=dev)

    labels = ints(0, 9)
    h = ints(size - 4, size - 2)
    w = torch.minimum(ints(5, size - 4), h - 2)
    t = ints(1, 2)
    top = (torch.rand(n, generator=generator, device=dev) * (size - h + 1).float()).long()
    left = (torch.rand(n, generator=generator, device=dev) * (size - w + 1).float()).long()
    r = torch.arange(size, device=dev)[None, :, None]  # rows
    c = torch.arange(size, device=dev)[None, None, :]  # columns

    def box(r0, r1, c0, c1):  # [n, size, size] inclusive rectangle masks, bounds per image
        return ((r >= r0[:, None, None]) & (r <= r1[:, None, None]) & (c >= c0[:, None, None]) & (c <= c1[:, None, None]))

    bottom, right = top + h - 1, left + w - 1
    mid = top + (h - 1) // 2
    seg = {
        "a": box(top, top + t - 1, left, right),
        "d": box(bottom - t + 1, bottom, left, right),
        "g": box(mid, mid + t - 1, left, right),
        "f": box(top, mid, left, left + t - 1),
        "b": box(top, mid, right - t + 1, right),
        "e": box(mid, bottom, left, left + t - 1),
        "c": box(mid, bottom, right - t + 1, right),
    }
    on = torch.tensor([[s in _SEGMENTS[d] for s in "abcdefg"] for d in range(10)], device=dev)[labels]  # [n, 7]
    img = torch.zeros(n, size, size, dtype=torch.bool, device=dev)
    for i, s in enumerate("abcdefg"):
        img |= seg[s] & on[:, i, None, None]
    if noise > 0:
        img ^= torch.rand(n, size, size, generator=generator, device=dev) < noise
    return img.float()[:, None], labels


__all__ += ["binary_digits"]


def bars_and_stripes(n: int, *, size: int = 4, generator=None):
    """n binary size x size images, flattened to (n, size * size) float32 0/1: each is either
    "bars" (every column on or off, each with probability 1/2) or "stripes" (every row), with
    probability 1/2 each (labels 0 / 1). Of the 2^(size^2) images only 2^(size + 1) - 2 occur
    (all-off and all-on are both bars and stripes), a classic test of binary latent-variable models:
    the data's entropy is about (size + 1) ln 2 nats against size^2 ln 2 for independent pixels."""
    n = positive_int("n", n)
    size = positive_int("size", size)
    device = _device(generator)
    labels = torch.randint(0, 2, (n,), generator=generator, device=device)
    on = torch.randint(0, 2, (n, size), generator=generator, device=device).float()
    bars = on[:, None, :].expand(n, size, size)  # column j on for every row
    stripes = on[:, :, None].expand(n, size, size)  # row i on for every column
    x = torch.where(labels[:, None, None] == 0, bars, stripes)
    return x.reshape(n, size * size).contiguous(), labels
