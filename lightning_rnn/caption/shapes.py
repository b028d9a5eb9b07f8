"""Coloured shapes on a 3x3 grid, drawn with torch and described in words, from a seed.

A scene holds one to three distinct objects, an object being a (colour, shape) such as
("red", "circle"). Objects sit in the cells of a 3x3 grid (with a little jitter of position,
size and colour), and two or three objects always share one row or one column, so that one
relation word describes them unambiguously:

- one object:    ``"a red circle"``;
- two in a row:  ``"a red circle left of a blue square"`` = ``"a blue square right of a red circle"``;
- two in a column: ``"a red circle above a blue square"`` = ``"a blue square below a red circle"``;
- three (a whole row or column), chained in order along it:
  ``"a red circle left of a blue square left of a green triangle"`` =
  ``"a green triangle right of a blue square right of a red circle"`` (``above``/``below`` for a column).

Every multi-object scene thus has two equivalent reference captions (read from either end).

Held-out combinations: the 66 unordered pairs of distinct objects are dealt, from the seed,
into ``heldout_pairs`` validation pairs, as many test pairs, and the rest for training. A
training image never shows two objects that form a validation or test pair; every
multi-object validation (test) image shows at least one validation (test) pair and no pair of
the other held-out split. Single objects appear in every split: each of the 12 objects is
seen in training, alone and paired, but the held-out pairs are never seen together.
"""

from __future__ import annotations

import itertools
import random
from typing import NamedTuple

import torch

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 90, 230), "yellow": (230, 210, 40),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
OBJECTS: tuple[tuple[str, str], ...] = tuple(itertools.product(COLOURS, SHAPES))
RELATIONS = {"horizontal": ("left of", "right of"), "vertical": ("above", "below")}  # (forward, backward)
#: Every word a caption can use, in vocabulary order.
WORDS: tuple[str, ...] = ("a", *COLOURS, *SHAPES, "left", "right", "of", "above", "below")
SPLITS = ("train", "val", "test")

Pair = frozenset  # of two (colour, shape) objects


class Placed(NamedTuple):
    """One drawn object: its colour and shape names, centre ``(x, y)`` and radius, in pixels."""

    colour: str
    shape: str
    x: float
    y: float
    radius: float


class Scene(NamedTuple):
    """Objects in reading order along ``axis`` (left to right, or top to bottom)."""

    objects: tuple[Placed, ...]
    axis: str  # "horizontal" or "vertical" (for one object: either, meaningless)


def describe(scene: Scene) -> list[str]:
    """The reference captions of a scene (one for one object, two otherwise; see the module docstring)."""
    names = [f"a {o.colour} {o.shape}" for o in scene.objects]
    if len(names) == 1:
        return names
    forward, backward = RELATIONS[scene.axis]
    return [f" {forward} ".join(names), f" {backward} ".join(reversed(names))]


def deal_pairs(seed: int, heldout_pairs: int) -> dict[str, set[Pair]]:
    """The unordered object pairs of each split: ``heldout_pairs`` each for val and test."""
    pairs = [Pair(p) for p in itertools.combinations(OBJECTS, 2)]
    random.Random(seed).shuffle(pairs)
    val, test = pairs[:heldout_pairs], pairs[heldout_pairs:2 * heldout_pairs]
    return {"train": set(pairs[2 * heldout_pairs:]), "val": set(val), "test": set(test)}


def pairs_of(objects: list[tuple[str, str]]) -> set[Pair]:
    return {Pair(p) for p in itertools.combinations(objects, 2)}


def allowed(objects: list[tuple[str, str]], split: str, dealt: dict[str, set[Pair]]) -> bool:
    """Whether a set of objects may appear in ``split`` (see the module docstring)."""
    pairs = pairs_of(objects)
    if not pairs:
        return True
    if split == "train":
        return pairs <= dealt["train"]
    other = "test" if split == "val" else "val"
    return bool(pairs & dealt[split]) and not pairs & dealt[other]


def sample_scene(rng: random.Random, split: str, dealt: dict[str, set[Pair]], max_objects: int,
                 image_size: int) -> Scene:
    """A random scene for ``split``: 1..max_objects objects (uniform), placed on the grid."""
    count = rng.randint(1, max_objects)
    while True:  # rejection: a held-out split accepts ~1 draw in 10 for two objects
        objects = rng.sample(OBJECTS, count)
        if allowed(objects, split, dealt):
            break
    axis = rng.choice(tuple(RELATIONS))
    line = rng.randrange(3)
    slots = sorted(rng.sample(range(3), count))  # positions along the axis, in reading order
    cell = image_size / 3
    placed = []
    for (colour, shape), slot in zip(objects, slots):
        row, col = (line, slot) if axis == "horizontal" else (slot, line)
        # jitter 0.1 cell + radius at most 0.38 cell: an object never leaves its cell
        x = (col + 0.5 + rng.uniform(-0.1, 0.1)) * cell
        y = (row + 0.5 + rng.uniform(-0.1, 0.1)) * cell
        placed.append(Placed(colour, shape, x, y, rng.uniform(0.28, 0.38) * cell))
    return Scene(tuple(placed), axis)


def shape_mask(shape: str, x: float, y: float, radius: float, image_size: int) -> torch.Tensor:
    """``[S, S]`` bool: the pixels (centres at integer coordinates) inside the shape."""
    ys, xs = torch.meshgrid(torch.arange(image_size, dtype=torch.float32),
                            torch.arange(image_size, dtype=torch.float32), indexing="ij")
    dx, dy = xs - x, ys - y
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":  # 0.85 r: about the circle's area
        return torch.maximum(dx.abs(), dy.abs()) <= 0.85 * radius
    if shape == "triangle":  # apex up at y - r, base at y + 0.75 r; the centre is inside
        height = dy + radius
        return (dy <= 0.75 * radius) & (dx.abs() <= height / 1.75)
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def render(scene: Scene, image_size: int, rng: random.Random) -> torch.Tensor:
    """``[3, S, S]`` uint8: a dark noisy background, each object's colour jittered by up to 20 per channel."""
    generator = torch.Generator().manual_seed(rng.getrandbits(63))
    background = rng.randint(0, 40)
    image = background + torch.randint(-8, 9, (3, image_size, image_size), generator=generator)
    for o in scene.objects:
        colour = torch.tensor([c + rng.randint(-20, 20) for c in COLOURS[o.colour]])
        mask = shape_mask(o.shape, o.x, o.y, o.radius, image_size)
        image[:, mask] = colour.unsqueeze(1)
    return image.clamp(0, 255).to(torch.uint8)


def generate(split: str, count: int, seed: int = 0, heldout_pairs: int = 6, max_objects: int = 3,
             image_size: int = 64) -> tuple[torch.Tensor, list[list[str]], list[Scene]]:
    """``count`` images of ``split``: ``images [count, 3, S, S]`` uint8, their reference captions
    and scenes. The same arguments give the same images, captions and scenes."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    dealt = deal_pairs(seed, heldout_pairs)
    rng = random.Random(seed * len(SPLITS) + SPLITS.index(split))  # one stream per split
    scenes = [sample_scene(rng, split, dealt, max_objects, image_size) for _ in range(count)]
    images = torch.stack([render(s, image_size, rng) for s in scenes]) if scenes else \
        torch.empty((0, 3, image_size, image_size), dtype=torch.uint8)
    return images, [describe(s) for s in scenes], scenes
