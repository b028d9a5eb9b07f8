"""Token <-> id mapping for word- and character-level language models.

The vocabulary is built on the training split only and travels inside every
checkpoint (see ``LanguageModel.on_save_checkpoint``), so text can be generated
from a checkpoint without the data files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Literal

Level = Literal["word", "char"]

UNK = "<unk>"
EOS = "<eos>"  # end-of-line marker for word-level text


def tokenize(text: str, level: Level) -> list[str]:
    """Split ``text`` into tokens.

    Word level: whitespace-separated words, with ``<eos>`` closing every line
    (the convention of Zaremba et al. and pytorch/examples). Character level:
    every character, newlines included.
    """
    if level == "char":
        return list(text)
    if level == "word":
        tokens: list[str] = []
        for line in text.splitlines():
            tokens.extend(line.split())
            tokens.append(EOS)
        return tokens
    raise ValueError(f"level must be 'word' or 'char', got {level!r}")


class Vocabulary:
    """An ordered list of tokens; a token's id is its position.

    ``<unk>`` is always present (PTB already uses it as an ordinary word), so
    evaluation text with unseen tokens can still be scored.
    """

    def __init__(self, tokens: Iterable[str], level: Level) -> None:
        if level not in ("word", "char"):
            raise ValueError(f"level must be 'word' or 'char', got {level!r}")
        self.level: Level = level
        self.itos: list[str] = list(tokens)
        if UNK not in self.itos:
            self.itos.append(UNK)
        self.stoi: dict[str, int] = {token: i for i, token in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("tokens must be unique")
        self.unk_id = self.stoi[UNK]

    @classmethod
    def build(cls, text: str, level: Level) -> "Vocabulary":
        """Vocabulary of every token in ``text``, most frequent first (ties by token)."""
        counts = Counter(tokenize(text, level))
        ordered = sorted(counts, key=lambda token: (-counts[token], token))
        return cls(ordered, level)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and (self.level, self.itos) == (other.level, other.itos)

    def encode(self, text: str, strict: bool = False) -> list[int]:
        """Token ids of ``text``; unknown tokens become ``<unk>``, or raise if ``strict``."""
        tokens = tokenize(text, self.level)
        if strict:
            unknown = sorted({t for t in tokens if t not in self.stoi})
            if unknown:
                shown = ", ".join(repr(t) for t in unknown[:20])
                raise ValueError(
                    f"text contains {len(unknown)} {self.level}(s) outside the vocabulary "
                    f"({len(self)} {self.level}s, built on the training split): {shown}"
                )
        return [self.stoi.get(token, self.unk_id) for token in tokens]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids: characters joined, or words joined by spaces with ``<eos>`` as newline."""
        tokens = [self.itos[i] for i in ids]
        if self.level == "char":
            return "".join(tokens)
        lines, current = [], []
        for token in tokens:
            if token == EOS:
                lines.append(" ".join(current))
                current = []
            else:
                current.append(token)
        return "".join(line + "\n" for line in lines) + " ".join(current)

    def to_dict(self) -> dict:
        """Plain-Python form stored in checkpoints."""
        return {"level": self.level, "itos": list(self.itos)}

    @classmethod
    def from_dict(cls, state: dict) -> "Vocabulary":
        return cls(state["itos"], state["level"])
