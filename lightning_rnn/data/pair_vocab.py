"""A token vocabulary shared by the source and the target side of sequence pairs.

Seq2seq models here use ONE vocabulary for both sides (as the DLFS2 book does), so a single
``vocab_size`` describes the model and the checkpoint can carry the whole vocabulary. The
sentence classifier (``lightning_rnn.classify``) uses it too, for its ``<pad>`` and ``<unk>``.

Ids 0-3 are reserved for special tokens; real tokens follow in first-occurrence order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")


class PairVocab:
    """Maps tokens (characters, or whitespace-separated words) to ids and back.

    Args:
        tokens: every token, specials first (``tokens[:4] == SPECIALS``).
        word_level: ``False`` splits text into characters, ``True`` into whitespace words.
    """

    def __init__(self, tokens: Sequence[str], word_level: bool = False) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"tokens must start with {SPECIALS}, got {list(tokens[:4])}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("tokens must be unique")
        self.tokens: list[str] = list(tokens)
        self.word_level = word_level
        self._index = {tok: i for i, tok in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Iterable[str], word_level: bool = False, min_count: int = 1) -> PairVocab:
        """Vocabulary of every token in ``texts`` seen at least ``min_count`` times, in
        first-occurrence order after the specials (rarer tokens then encode as ``<unk>``)."""
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
        counts = Counter({tok: 0 for tok in SPECIALS})  # dicts keep insertion order: first occurrence
        for text in texts:
            counts.update(cls.split(text, word_level))
        kept = [tok for tok, n in counts.items() if tok not in SPECIALS and n >= min_count]
        return cls([*SPECIALS, *kept], word_level)

    @staticmethod
    def split(text: str, word_level: bool) -> list[str]:
        return text.split() if word_level else list(text)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, unknown: str = "error") -> list[int]:
        """Token ids of ``text`` (no specials added).

        Args:
            unknown: ``"error"`` raises ``ValueError`` on a token outside the vocabulary,
                ``"unk"`` maps it to ``<unk>``.
        """
        ids = []
        for pos, tok in enumerate(self.split(text, self.word_level)):
            idx = self._index.get(tok)
            if idx is None or idx < len(SPECIALS):
                if unknown == "unk":
                    idx = UNK
                else:
                    kind = "word" if self.word_level else "character"
                    raise ValueError(
                        f"{kind} {tok!r} at position {pos} of {text!r} is not in the vocabulary"
                    )
            ids.append(idx)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, stopping at the first ``<eos>`` and skipping ``<pad>``/``<bos>``."""
        out = []
        for idx in ids:
            idx = int(idx)
            if idx == EOS:
                break
            if idx in (PAD, BOS):
                continue
            out.append(self.tokens[idx])
        return (" " if self.word_level else "").join(out)

    def to_dict(self) -> dict:
        """Plain-data form, stored in checkpoints."""
        return {"tokens": list(self.tokens), "word_level": self.word_level}

    @classmethod
    def from_dict(cls, data: dict) -> PairVocab:
        return cls(data["tokens"], data["word_level"])
