"""Validation/test metrics of a seq2seq model, all torchmetrics (so they sync across processes).

- ``loss``: cross-entropy per target token (weighted by token count, so exact across processes);
- ``exact_match``: share of decoded sequences equal to the reference (up to ``<eos>``);
- ``token_accuracy``: share of teacher-forced next-token predictions that are right
  (padding excluded);
- ``bleu``: corpus BLEU-4 (smoothed) over tokens of the decoded strings;
- ``cer``: character error rate of the decoded strings.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.text import BLEUScore, CharErrorRate

from lightning_rnn.data.pair_vocab import EOS, PAD, PairVocab


def strip_after_eos(tokens: Tensor) -> Tensor:
    """Replace everything after the first ``<eos>`` of each row with ``<pad>``. tokens: (B, T)."""
    after = (tokens == EOS).long().cumsum(1) - (tokens == EOS).long() > 0
    return tokens.masked_fill(after, PAD)


class Seq2SeqMetrics(nn.Module):
    """The four metrics of one stage; log the attributes with ``LightningModule.log``."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = MeanMetric()
        self.exact_match = MeanMetric()
        self.token_accuracy = MeanMetric()
        self.bleu = BLEUScore(n_gram=4, smooth=True)
        self.cer = CharErrorRate()

    def as_dict(self, prefix: str) -> dict[str, object]:
        return {f"{prefix}_{name}": metric for name, metric in self.named_children()}

    def update(
        self,
        predicted: Tensor,
        target_out: Tensor,
        logits: Tensor,
        vocab: PairVocab | None,
        loss: Tensor | None = None,
    ) -> tuple[list[str], list[str]]:
        """
        Args:
            predicted: (B, T') decoded ids (``<eos>``, then ``<pad>``).
            target_out: (B, T) reference ids ``tokens <eos> <pad>...``.
            logits: (B, T, V) teacher-forced logits for ``target_out``.
            vocab: to turn ids into strings for BLEU and CER (skipped when ``None``).
            loss: the batch's mean cross-entropy per target token.

        Returns:
            decoded and reference strings (empty lists without a vocabulary).
        """
        width = max(predicted.shape[1], target_out.shape[1])
        pred = nn.functional.pad(strip_after_eos(predicted), (0, width - predicted.shape[1]), value=PAD)
        ref = nn.functional.pad(target_out, (0, width - target_out.shape[1]), value=PAD)
        self.exact_match.update((pred == ref).all(1).float())
        real = target_out != PAD
        if loss is not None:
            self.loss.update(loss.detach(), weight=real.sum())
        self.token_accuracy.update((logits.argmax(-1) == target_out)[real].float())
        if vocab is None:
            return [], []
        hyps = [vocab.decode(row) for row in predicted.tolist()]
        refs = [vocab.decode(row) for row in target_out.tolist()]
        self.bleu.update([_bleu_tokens(h, vocab) for h in hyps], [[_bleu_tokens(r, vocab)] for r in refs])
        self.cer.update(hyps, refs)
        return hyps, refs


def _bleu_tokens(text: str, vocab: PairVocab) -> str:
    """BLEUScore splits on spaces: give it one space-separated item per model token."""
    if vocab.word_level:
        return text
    return " ".join("\u2581" if ch == " " else ch for ch in text)
