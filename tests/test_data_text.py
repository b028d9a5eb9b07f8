"""Vocabulary, stream batching and the text DataModules."""

from pathlib import Path

import pytest
import torch

from lightning_rnn.data import PennTreebank, PythonStdlibChars, StreamWindows, TextDataModule, TinyShakespeare, Vocabulary, batchify
from lightning_rnn.data.stdlib_corpus import stdlib_corpus
from lightning_rnn.data.vocabulary import EOS, UNK, tokenize


def write_splits(folder: Path, train: str, valid: str, test: str) -> dict[str, str]:
    paths = {}
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        path = folder / f"{split}.txt"
        path.write_text(text)
        paths[f"{split}_file"] = str(path)
    return paths


def test_word_tokens_close_each_line_with_eos_and_keep_unk():
    assert tokenize("a <unk> b\nc\n", "word") == ["a", "<unk>", "b", EOS, "c", EOS]


def test_vocabulary_is_built_on_train_and_maps_unseen_words_to_unk():
    vocab = Vocabulary.build("the cat\nthe dog the\n", "word")
    assert vocab.itos[:2] == ["the", EOS]  # most frequent first
    assert vocab.encode("the bird") == [vocab.stoi["the"], vocab.stoi[UNK], vocab.stoi[EOS]]
    with pytest.raises(ValueError, match="outside the vocabulary.*'bird'"):
        vocab.encode("the bird", strict=True)


@pytest.mark.parametrize("level, text", [("word", "a b\nc a\n"), ("char", "def f(x):\n    return x\n")], ids=["word", "char"])
def test_vocabulary_round_trips_text_and_dict(level, text):
    vocab = Vocabulary.build(text, level)
    assert vocab.decode(vocab.encode(text)) == text
    assert Vocabulary.from_dict(vocab.to_dict()) == vocab


def test_batchify_rows_are_contiguous_slices_and_tail_is_dropped():
    tokens = torch.arange(23)
    streams = batchify(tokens, 4)
    assert streams.shape == (4, 5)
    for row in range(4):
        assert torch.equal(streams[row], tokens[row * 5 : (row + 1) * 5])


def test_windows_continue_each_other_and_targets_are_shifted_inputs():
    tokens = torch.arange(3 * 12)
    windows = list(StreamWindows(tokens, batch_size=3, bptt=5))
    assert len(windows) == len(StreamWindows(tokens, batch_size=3, bptt=5)) == 3  # 11 predictable positions
    assert [w[0].shape[1] for w in windows] == [5, 5, 1]
    inputs = torch.cat([w[0] for w in windows], dim=1)
    targets = torch.cat([w[1] for w in windows], dim=1)
    streams = batchify(tokens, 3)
    assert torch.equal(inputs, streams[:, :-1]) and torch.equal(targets, streams[:, 1:])


def test_two_ranks_read_their_own_contiguous_streams_in_lock_step():
    tokens = torch.arange(2 * 3 * 10 + 7)
    per_rank = [StreamWindows(tokens, batch_size=3, bptt=4, rank=r, world_size=2) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1])
    stream_length = tokens.numel() // 6
    for rank, windows in enumerate(per_rank):
        inputs = torch.cat([x for x, _ in windows], dim=1)
        for j in range(3):
            start = (rank * 3 + j) * stream_length
            assert torch.equal(inputs[j], tokens[start : start + stream_length - 1])


@pytest.mark.parametrize("bad", [0, -3], ids=["zero", "negative"])
def test_bptt_must_be_positive(tmp_path, bad):
    with pytest.raises(ValueError, match="bptt must be a positive integer"):
        TextDataModule(**write_splits(tmp_path, "ab\n", "ab\n", "ab\n"), level="char", bptt=bad)


def test_missing_files_are_named_with_where_to_get_them(tmp_path):
    datamodule = PennTreebank(data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        datamodule.vocab_size
    message = str(err.value)
    assert all(f"ptb.{split}.txt" in message for split in ("train", "valid", "test"))
    assert "Where to get them" in message
    with pytest.raises(FileNotFoundError, match="input.txt"):
        TinyShakespeare(data_dir=str(tmp_path)).vocab_size


def test_data_env_var_sets_the_default_root(tmp_path, monkeypatch):
    (tmp_path / "ptb").mkdir()
    write_splits(tmp_path / "ptb", "a b\n", "b a\n", "a\n")
    for split in ("train", "valid", "test"):
        (tmp_path / "ptb" / f"{split}.txt").rename(tmp_path / "ptb" / f"ptb.{split}.txt")
    monkeypatch.setenv("LIGHTNING_RNN_DATA", str(tmp_path))
    assert PennTreebank().vocab.itos == [EOS, "a", "b", UNK]


def test_stdlib_corpus_is_deterministic_and_split_90_5_5():
    first, second = stdlib_corpus(), stdlib_corpus()
    assert first == second
    sizes = [len(part) for part in first]
    assert sizes[0] / sum(sizes) == pytest.approx(0.90, abs=0.01)
    assert "def " in first[0] and "import" in first[1]
    assert PythonStdlibChars().vocab_size > 90  # printable ASCII and then some
