"""Seeded on-the-fly generators for two toy seq2seq tasks, so recipes need no data files.

- addition: ``"57+5" -> "62"`` with operands of 1 to ``max_digits`` digits;
- dates: a date in one of many surface formats -> ``YYYY-MM-DD``.

Each generator returns *distinct* sources (so train/val/test drawn from one call never
overlap) and is a pure function of its arguments.
"""

from __future__ import annotations

import datetime as dt
import random
import string

Pair = tuple[str, str]

ADDITION_ALPHABET = "0123456789+"
DATE_ALPHABET = string.digits + string.ascii_lowercase + string.ascii_uppercase + " ,./-"

_MONTHS = [
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
]
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
# Two-digit years are read with a pivot at 70 (70-99 -> 19xx, 00-69 -> 20xx), so the generated
# range stays inside 1970-2069 and every source has exactly one answer.
_FIRST_DAY = dt.date(1970, 1, 1)
_LAST_DAY = dt.date(2069, 12, 31)


def addition_pairs(n: int, max_digits: int = 3, seed: int = 0) -> list[Pair]:
    """``n`` distinct addition problems; each operand's digit count is uniform in 1..max_digits."""
    if max_digits < 1:
        raise ValueError(f"max_digits must be >= 1, got {max_digits}")
    possible = (10**max_digits) ** 2
    if n > possible // 2:
        raise ValueError(f"n={n} is too many distinct problems for max_digits={max_digits}")
    rng = random.Random(seed)

    def operand() -> int:
        digits = rng.randint(1, max_digits)
        return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)

    seen: set[str] = set()
    pairs = []
    while len(pairs) < n:
        a, b = operand(), operand()
        src = f"{a}+{b}"
        if src not in seen:
            seen.add(src)
            pairs.append((src, str(a + b)))
    return pairs


def _formats(d: dt.date) -> list[str]:
    month, wday = _MONTHS[d.month - 1], _WEEKDAYS[d.weekday()]
    long_ = f"{month} {d.day}, {d.year}"
    return [
        long_, long_.title(), long_.upper(),                                 # september 27, 1994
        f"{month[:3]} {d.day}, {d.year}".title(),                            # Sep 27, 1994
        f"{month[:3]} {d.day}, {d.year}".upper(),                            # SEP 27, 1994
        f"{wday}, {long_}", f"{wday}, {long_}".title(), f"{wday}, {long_}".upper(),
        f"{d.day} {month} {d.year}".title(),                                 # 27 September 1994
        f"{d.month}/{d.day}/{d.year % 100:02d}",                             # 9/27/94
        f"{d.month}/{d.day}/{d.year}",                                       # 9/27/1994
        f"{d.day}.{d.month}.{d.year}",                                       # 27.9.1994
        f"{d.year}/{d.month:02d}/{d.day:02d}",                               # 1994/09/27
        d.isoformat(),                                                       # 1994-09-27
    ]


DATE_FORMAT_COUNT = len(_formats(_FIRST_DAY))


def date_pairs(n: int, seed: int = 0) -> list[Pair]:
    """``n`` distinct (date in a random surface format, ``YYYY-MM-DD``) pairs from 1970-2069."""
    span = (_LAST_DAY - _FIRST_DAY).days + 1
    if n > span * DATE_FORMAT_COUNT // 2:
        raise ValueError(f"n={n} is too many distinct dates")
    rng = random.Random(seed)
    seen: set[str] = set()
    pairs = []
    while len(pairs) < n:
        d = _FIRST_DAY + dt.timedelta(days=rng.randrange(span))
        src = rng.choice(_formats(d))
        if src not in seen:
            seen.add(src)
            pairs.append((src, d.isoformat()))
    return pairs


ALPHABETS = {"addition": ADDITION_ALPHABET, "date": DATE_ALPHABET}


def generate_pairs(task: str, n: int, seed: int = 0, max_digits: int = 3) -> list[Pair]:
    """Dispatch to :func:`addition_pairs` or :func:`date_pairs` by ``task`` name."""
    if task == "addition":
        return addition_pairs(n, max_digits=max_digits, seed=seed)
    if task == "date":
        return date_pairs(n, seed=seed)
    raise ValueError(f"task must be one of {sorted(ALPHABETS)}, got {task!r}")
