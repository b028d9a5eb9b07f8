"""Seq2seq data: the DLFS2 book's split and vocabulary, seeded generators, TSV pair files."""

from __future__ import annotations

import datetime as dt

import numpy
import pytest

from lightning_rnn.data.generators import DATE_ALPHABET, _formats, addition_pairs, date_pairs
from lightning_rnn.data.pair_vocab import BOS, EOS, PAD, SPECIALS, UNK, PairVocab
from lightning_rnn.data.text import resolve_data_path
from lightning_rnn.seq2seq.data import CharPairDataModule, GeneratedPairDataModule, PairsFileDataModule
from lightning_rnn.seq2seq.pairs import PairDataset, collate_pairs, read_tsv_pairs

BOOK_FILES = ["dlfs2-seq2seq/addition.txt", "dlfs2-seq2seq/date.txt"]


def _book_reference(path):
    """The book's dataset/sequence.py, re-stated: vocabulary, then a seeded global shuffle."""
    questions, answers, chars = [], [], []
    for line in open(path):
        idx = line.find("_")
        questions.append(line[:idx])
        answers.append(line[idx:-1])
    for q, a in zip(questions, answers):
        for ch in q + a:
            if ch not in chars:
                chars.append(ch)
    indices = numpy.arange(len(questions))
    numpy.random.seed(1984)
    numpy.random.shuffle(indices)
    split_at = len(indices) - len(indices) // 10
    pairs = [(questions[i].rstrip(" "), answers[i][1:].rstrip(" ")) for i in indices]
    return chars, pairs[:split_at], pairs[split_at:]


@pytest.mark.parametrize("name", BOOK_FILES, ids=["addition", "date"])
def test_book_split_and_vocabulary_are_reproduced(name):
    path = resolve_data_path(name)
    if not path.exists():
        pytest.skip(f"{path} absent: set LIGHTNING_RNN_DATA to the folder holding dlfs2-seq2seq/")
    chars, train, test = _book_reference(path)
    dm = CharPairDataModule(name, val_size=1000)
    assert dm.vocab.tokens == [*SPECIALS, *chars]
    assert dm.vocab_size == len(SPECIALS) + (13 if "addition" in name else 59)
    assert (len(train), len(test)) == (45000, 5000)
    assert dm.splits["train"] + dm.splits["val"] == train
    assert len(dm.splits["val"]) == 1000
    assert dm.splits["test"] == test
    if "addition" in name:  # the book prints its first training example
        assert train[0] == ("71+118", "189")


def test_generators_are_deterministic_correct_and_distinct():
    assert addition_pairs(300, max_digits=3, seed=7) == addition_pairs(300, max_digits=3, seed=7)
    assert addition_pairs(300, seed=7) != addition_pairs(300, seed=8)
    assert date_pairs(300, seed=7) == date_pairs(300, seed=7)
    assert date_pairs(300, seed=7) != date_pairs(300, seed=8)
    for src, tgt in addition_pairs(2000, max_digits=4, seed=1):
        a, b = src.split("+")
        assert int(a) + int(b) == int(tgt) and len(a) <= 4 and str(int(a)) == a
    dates = date_pairs(3000, seed=1)
    for src, tgt in dates:
        assert src in _formats(dt.date.fromisoformat(tgt))
        assert set(src) <= set(DATE_ALPHABET)
    assert len({s for s, _ in dates}) == len(dates)
    assert len({f for s, t in dates for f in [_formats(dt.date.fromisoformat(t)).index(s)]}) > 10


def test_generated_datamodule_splits_are_disjoint():
    dm = GeneratedPairDataModule("addition", train_size=500, val_size=100, test_size=100, max_digits=2, seed=3)
    sources = [{s for s, _ in dm.splits[k]} for k in ("train", "val", "test")]
    assert [len(s) for s in sources] == [500, 100, 100]
    assert not (sources[0] & sources[1]) and not (sources[0] & sources[2])
    assert dm.vocab_size == len(SPECIALS) + 11


def test_pair_dataset_pads_and_collate_trims():
    vocab = PairVocab.build(["ab", "c"])
    ds = PairDataset([("abc", "c"), ("a", "ba")], vocab)
    src, tgt = collate_pairs([ds[1]])
    assert src.tolist() == [[vocab.encode("a")[0]]]
    assert tgt.tolist() == [[BOS, *vocab.encode("ba"), EOS]]
    assert ds.source[1].tolist()[1:] == [PAD, PAD]


def test_vocab_decode_stops_at_eos_and_unknown_tokens():
    vocab = PairVocab.build(["hello world"], word_level=True)
    assert vocab.decode([BOS, *vocab.encode("world hello"), EOS, *vocab.encode("hello")]) == "world hello"
    assert vocab.encode("hello there", unknown="unk")[1] == UNK
    with pytest.raises(ValueError, match=r"word 'there' at position 1"):
        vocab.encode("hello there")


@pytest.mark.parametrize(
    "line,problem",
    [("no tab here", "no tab"), ("a\tb\tc", "two tabs"), ("\tb", "empty source"), ("a\t ", "empty target")],
    ids=["no-tab", "two-tabs", "empty-source", "empty-target"],
)
def test_malformed_pairs_file_line_is_reported_with_its_number(tmp_path, line, problem):
    path = tmp_path / "pairs.tsv"
    path.write_text(f"hello\tbonjour\n\nthanks\tmerci\n{line}\n")
    with pytest.raises(ValueError, match=r"pairs.tsv:4: expected 'source<TAB>target'"):
        read_tsv_pairs(path)


def test_pairs_file_datamodule_word_tokens(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("".join(f"the cat {i}\tle chat {i}\n" for i in range(20)))
    dm = PairsFileDataModule(str(path), tokens="word", val_fraction=0.25, batch_size=4)
    assert (len(dm.splits["train"]), len(dm.splits["val"])) == (15, 5)
    assert {"the", "cat", "le", "chat"} <= set(dm.vocab.tokens)
    assert dm.max_target_len == 3
    dm.setup("fit")
    src, tgt = next(iter(dm.train_dataloader()))
    assert src.shape == (4, 3) and tgt.shape == (4, 5)  # 3 words; <bos> 3 words <eos>


def test_pairs_file_unknown_tokens_in_held_out_files_become_unk(tmp_path):
    (tmp_path / "train.tsv").write_text("ab\tba\nba\tab\n")
    (tmp_path / "val.tsv").write_text("az\tza\n")
    dm = PairsFileDataModule(str(tmp_path / "train.tsv"), val_file=str(tmp_path / "val.tsv"))
    dm.setup("fit")
    src, tgt = next(iter(dm.val_dataloader()))
    assert src.tolist() == [[dm.vocab.encode("a")[0], UNK]]
    assert tgt.tolist() == [[BOS, UNK, dm.vocab.encode("a")[0], EOS]]
