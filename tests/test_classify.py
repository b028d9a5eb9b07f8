"""Sentence classification: both file formats and their errors, the vocabulary (training split only,
min_count), padding never read (alone == in a padded batch == torch.nn's packed LSTM), pooling,
bucketed batches, a tiny fit that learns, checkpoints that classify, the ``classify`` command,
the recipe through ``lightning-rnn fit`` / ``test``, exact resume, and the real SST-2 files."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from lightning_rnn import cli
from lightning_rnn.classify import SequenceClassifier, TextClassificationData, pool, read_examples
from lightning_rnn.classify import command
from lightning_rnn.classify.encoder import LengthAwareRNN
from lightning_rnn.data.bucketing import BucketBatchSampler
from lightning_rnn.data.pair_vocab import PAD, UNK
from lightning_rnn.data.resumable import EpochSampler
from lightning_rnn.data.text import default_data_root, resolve_data_path
from tests.conftest import requires_triton_interpreter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "sst2_bilstm.yaml"
FILLER = "the a film movie plot was is and it of acting story very quite but this".split()


def good_or_not(count: int, seed: int) -> list[tuple[int, str]]:
    """Synthetic sentences of 2-12 filler words; label 1 iff the word "good" is among them."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        sentence = [rng.choice(FILLER) for _ in range(rng.randint(2, 12))]
        if i % 2:
            sentence[rng.randrange(len(sentence))] = "good"
        rows.append((i % 2, " ".join(sentence)))
    return rows


def write_label_first(path: Path, rows: list[tuple[int | str, str]]) -> Path:
    path.write_text("".join(f"{label} {text}\n" for label, text in rows), encoding="utf-8")
    return path


def good_data(tmp_path: Path, train: int = 256, **kwargs) -> TextClassificationData:
    train_file = write_label_first(tmp_path / "train.txt", good_or_not(train, seed=1))
    val_file = write_label_first(tmp_path / "val.txt", good_or_not(64, seed=2))
    options = dict(batch_size=16, eval_batch_size=32, bucket_batches=4) | kwargs
    return TextClassificationData(str(train_file), str(val_file), str(val_file), **options)


# -- reading the files ---------------------------------------------------------------------------

def test_both_formats_read_labels_as_indices_or_names(tmp_path):
    names = ["negative", "positive"]
    first = tmp_path / "a.txt"
    first.write_text("1 a stirring , funny film\n0 dull .\n\npositive crème brûlée\n", encoding="utf-8")
    tsv = tmp_path / "b.tsv"
    tsv.write_text("a stirring , funny film\t1\ndull .\tnegative\n", encoding="utf-8")
    assert read_examples(first, names) == [("a stirring , funny film", 1), ("dull .", 0), ("crème brûlée", 1)]
    assert read_examples(tsv, names) == [("a stirring , funny film", 1), ("dull .", 0)]  # .tsv: detected
    renamed = tmp_path / "b.txt"
    renamed.write_text(tsv.read_text())
    assert read_examples(renamed, names, format="tsv") == read_examples(tsv, names)
    with pytest.raises(ValueError, match="format must be 'auto', 'label_first' or 'tsv'"):
        read_examples(tsv, names, format="csv")


@pytest.mark.parametrize("suffix,line,message", [
    (".txt", "great film", r"label 'great' is not a class index 0\.\.1 or one of \['negative', 'positive'\]"),
    (".txt", "2 too high", r"label '2' is not a class index 0\.\.1"),
    (".txt", "1", r"label '1' but no text"),
    (".txt", "1    ", r"label '1' but no text"),
    (".tsv", "no tab here", r"expected 'text<TAB>label' \(one tab\), got 0 tabs"),
    (".tsv", "two\ttabs\t1", r"expected 'text<TAB>label' \(one tab\), got 2 tabs"),
    (".tsv", "some text\t", r"no label"),
    (".tsv", "some text\tmaybe", r"label 'maybe' is not"),
    (".tsv", " \t1", r"label '1' but no text"),
])
def test_a_malformed_line_is_reported_with_file_and_line(tmp_path, suffix, line, message):
    good = "1 fine\n" if suffix == ".txt" else "fine\t1\n"
    path = tmp_path / f"data{suffix}"
    path.write_text(good + "\n" + line + "\n" + good)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:3: {message}"):
        read_examples(path, ["negative", "positive"])


def test_a_missing_or_empty_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file"):
        read_examples(tmp_path / "nope.txt", ["negative", "positive"])
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no examples"):
        read_examples(tmp_path / "blank.txt", ["negative", "positive"])


def test_the_vocabulary_comes_from_the_training_file_only_and_keeps_words_seen_min_count_times(tmp_path):
    train = write_label_first(tmp_path / "train.txt", [(1, "good good fun"), (0, "bad fun"), (1, "Good")])
    val = write_label_first(tmp_path / "val.txt", [(1, "unseen good"), (0, "bad")])
    data = TextClassificationData(str(train), str(val), min_count=2)
    assert data.vocab.tokens[4:] == ["good", "fun"]  # "bad" and "Good" once: out
    assert data.vocab_size == 6 and data.num_classes == 2
    assert data.dataset("val").ids[0].tolist() == [UNK, 4]
    lower = TextClassificationData(str(train), str(val), min_count=2, lowercase=True)
    assert lower.vocab.tokens[4:] == ["good", "fun"] and lower.dataset("train").ids[2].tolist() == [4]
    assert TextClassificationData(str(train), str(val)).vocab.tokens[4:] == ["good", "fun", "bad", "Good"]


@pytest.mark.parametrize("kwargs,message", [
    ({"min_count": 0}, "min_count must be a positive integer"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"eval_batch_size": 1.5}, "eval_batch_size must be a positive integer"),
    ({"bucket_batches": 0}, "bucket_batches must be a positive integer"),
    ({"num_workers": -1}, "num_workers must be a non-negative integer"),
    ({"label_names": ["only"]}, "label_names must name at least 2 classes"),
    ({"label_names": ["a", "a"]}, "label_names must be distinct"),
    ({"label_names": ["very good", "bad"]}, "label_names must be single words"),
    ({"format": "csv"}, "format must be"),
    ({"val_file": ""}, "val_file must be a file name"),
])
def test_bad_data_arguments_are_rejected_at_construction(kwargs, message):
    arguments = {"train_file": "train.txt", "val_file": "val.txt"} | kwargs
    with pytest.raises(ValueError, match=message):
        TextClassificationData(**arguments)


@pytest.mark.parametrize("kwargs,message", [
    ({"vocab_size": 3}, "vocab_size must count the 4 special tokens"),
    ({"num_classes": 1}, "num_classes must be at least 2"),
    ({"hidden_size": 0}, "hidden_size must be a positive integer"),
    ({"cell": "lstmx"}, "cell must be one of"),
    ({"pooling": "sum"}, "pooling must be 'last', 'mean' or 'max'"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ({"word_dropout": -0.1}, r"word_dropout must be in \[0, 1\)"),
    ({"embedding_init": 0.0}, "embedding_init must be positive or None"),
    ({"lr_schedule": "step"}, "lr_schedule must be 'constant' or 'cosine'"),
])
def test_bad_model_arguments_are_rejected_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SequenceClassifier(**({"vocab_size": 10} | kwargs))


def test_word_vectors_start_small_and_padding_at_zero():
    model = SequenceClassifier(50, embedding_size=8, embedding_init=0.25)
    assert model.embedding.weight.abs().max() <= 0.25 and model.embedding.weight[PAD].abs().max() == 0
    assert SequenceClassifier(50, embedding_size=64, embedding_init=None).embedding.weight.std() > 0.5  # N(0, 1)


def test_without_a_test_file_test_is_an_error(tmp_path):
    data = good_data(tmp_path)
    data = TextClassificationData(data.files["train"], data.files["val"])
    with pytest.raises(ValueError, match="test_file is not set"):
        data.setup("test")


# -- padding is never read ---------------------------------------------------------------------

@pytest.mark.parametrize("cell,bidirectional,num_layers,pooling", [
    ("lstm", True, 2, "last"), ("lstm", True, 1, "max"), ("gru", True, 1, "mean"),
    ("rnn", True, 2, "max"), ("lstm", False, 2, "last"), ("gru", False, 1, "max"),
])
def test_a_sentence_alone_and_in_a_padded_batch_gets_the_same_logits(cell, bidirectional, num_layers, pooling):
    model = SequenceClassifier(30, 3, embedding_size=6, hidden_size=5, cell=cell, num_layers=num_layers,
                               bidirectional=bidirectional, pooling=pooling, backend="torch").eval()
    sentence = torch.tensor([[7, 8, 9]])
    # the same sentence padded to 8, beside a full-length one; <pad> embeds to 0, so poison it too
    with torch.no_grad():
        model.embedding.weight[PAD] = 1e3
        batch = torch.tensor([[5] * 8, [7, 8, 9] + [PAD] * 5])
        alone = model(sentence, torch.tensor([3]))
        padded = model(batch, torch.tensor([8, 3]))
    torch.testing.assert_close(padded[1:], alone, rtol=1e-5, atol=1e-6)


@requires_triton_interpreter
def test_the_triton_backend_serves_padded_batches_with_the_same_logits():
    """What packing would forbid: backend="triton" on a padded bidirectional batch (CPU interpreter)."""
    triton = SequenceClassifier(30, 2, embedding_size=6, hidden_size=5, num_layers=2, backend="triton").eval()
    reference = SequenceClassifier(30, 2, embedding_size=6, hidden_size=5, num_layers=2, backend="torch").eval()
    reference.load_state_dict(triton.state_dict())
    batch, lengths = torch.tensor([[5] * 8, [7, 8, 9] + [PAD] * 5]), torch.tensor([8, 3])
    with torch.no_grad():
        logits = triton(batch, lengths)
        torch.testing.assert_close(logits, reference(batch, lengths))
        torch.testing.assert_close(logits[1:], triton(batch[1:, :3], lengths[1:]))
    assert {layer.last_backend for layer in triton.rnn.layers} == {"triton"}


def test_the_encoder_equals_torch_nn_on_a_packed_batch():
    """Bidirectional, two layers: outputs and `last` match torch.nn.LSTM on pack_padded_sequence."""
    encoder = LengthAwareRNN(4, 5, num_layers=2, bidirectional=True, backend="torch").eval()
    reference = torch.nn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True).eval()
    with torch.no_grad():
        for layer in range(2):
            for direction, suffix in enumerate(["", "_reverse"]):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(reference, f"{name}_l{layer}{suffix}").copy_(
                        getattr(encoder.layers[layer], f"{name}_l0{suffix}"))
    x, lengths = torch.randn(3, 6, 4), torch.tensor([6, 2, 4])
    outputs, last = encoder(x, lengths)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, (h, _) = reference(packed)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(expected, batch_first=True, total_length=6)
    torch.testing.assert_close(outputs, expected)
    torch.testing.assert_close(last, torch.cat([h[-2], h[-1]], dim=-1))  # top layer: forward, backward


def test_reverse_within_length_leaves_the_padding_in_place_and_undoes_itself():
    from kernels.lengths import reverse_within

    x = torch.arange(10.0).view(2, 5, 1).transpose(0, 1)  # (T, B, 1)
    lengths = torch.tensor([5, 3])
    assert reverse_within(x, lengths).squeeze(-1).t().tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]
    torch.testing.assert_close(reverse_within(reverse_within(x, lengths), lengths), x)


def test_a_checkpoint_of_the_former_layout_loads():
    """Before: one one-layer module per direction (layers.i.0 / layers.i.1); now one per layer."""
    encoder = LengthAwareRNN(3, 4, num_layers=2, bidirectional=True, backend="torch")
    old = {}
    for key, value in encoder.state_dict().items():
        layer, name = key.split(".")[1], key.split(".")[2]
        direction = "1" if name.endswith("_reverse") else "0"
        old[f"layers.{layer}.{direction}.{name.removesuffix('_reverse')}"] = value.clone() + 1
    encoder.load_state_dict(old)
    assert torch.equal(encoder.layers[1].weight_hh_l0_reverse, old["layers.1.1.weight_hh_l0"])


def test_pooling_by_hand():
    outputs = torch.tensor([[[1.0, -2.0], [3.0, -4.0], [0.0, 0.0]],
                            [[-1.0, -5.0], [0.0, 0.0], [0.0, 0.0]]])  # [B=2, T=3, F=2], zero at padding
    lengths, last = torch.tensor([2, 1]), torch.tensor([[9.0, 9.0], [8.0, 8.0]])
    assert pool(outputs, last, lengths, "mean").tolist() == [[2.0, -3.0], [-1.0, -5.0]]
    assert pool(outputs, last, lengths, "max").tolist() == [[3.0, -2.0], [-1.0, -5.0]]  # padding's 0 not taken
    assert pool(outputs, last, lengths, "last") is last


def test_last_pooling_is_the_forward_state_at_the_last_token_and_the_backward_at_the_first():
    encoder = LengthAwareRNN(3, 4, bidirectional=True, backend="torch")
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 2])
    outputs, last = encoder(x, lengths)
    torch.testing.assert_close(last[1], torch.cat([outputs[1, 1, :4], outputs[1, 0, 4:]]))
    assert outputs[1, 2:].abs().max() == 0  # padding positions hold zeros


# -- batches of similar lengths ----------------------------------------------------------------

def test_bucketed_batches_cover_the_epoch_group_lengths_and_depend_only_on_seed_and_epoch():
    lengths = [random.Random(0).randint(1, 60) for _ in range(103)]
    order = EpochSampler(103, shuffle=True, seed=5)
    sampler = BucketBatchSampler(order, lengths, batch_size=8, bucket_batches=4)
    first = list(sampler)
    assert len(first) == len(sampler) == 13 and sorted(i for b in first for i in b) == list(range(103))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first) / len(first)
    assert spread < 15  # random batches of 8 from 1..60 spread ~45
    torch.manual_seed(1)  # the global random state plays no part
    assert list(sampler) == first
    sampler.skip_once(3)
    assert list(sampler) == first[3:] and list(sampler) == first
    order.set_epoch(1)
    assert list(sampler) != first and len(list(sampler)) == 13
    in_order = list(BucketBatchSampler(EpochSampler(103, shuffle=False), lengths, 8, None, shuffle_batches=False))
    assert [lengths[i] for b in in_order for i in b] == sorted(lengths)


# -- training, checkpoints, the command -------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[SequenceClassifier, Path, dict]:
    """A small BiLSTM fitted on "does the sentence contain 'good'?", and its checkpoint."""
    tmp = tmp_path_factory.mktemp("classify")
    torch.set_num_threads(1)
    L.seed_everything(0)
    data = good_data(tmp)
    model = SequenceClassifier(data.vocab_size, data.num_classes, embedding_size=16, hidden_size=16,
                               dropout=0.1, lr=0.01, backend="torch")
    trainer = L.Trainer(max_epochs=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp, num_sanity_val_steps=0)
    trainer.fit(model, data)
    scores = trainer.validate(model, data, verbose=False)[0]
    trainer.save_checkpoint(tmp / "good.ckpt")
    return model, tmp / "good.ckpt", scores


def test_a_tiny_fit_learns_far_below_chance(trained):
    model, _, scores = trained
    assert scores["val_loss"] < 0.2, scores  # chance: ln 2 = 0.69
    assert scores["val_acc"] > 0.95 and scores["val_f1"] > 0.95, scores
    assert [label for label, _ in model.classify(["the movie was good", "the movie was very quite"])] == \
        ["positive", "negative"]


def test_a_checkpoint_holds_the_vocabulary_and_classifies_the_same(trained):
    model, checkpoint, _ = trained
    texts = ["good plot", "the acting and the story", "unknownword film good"]
    loaded = SequenceClassifier.load_from_checkpoint(checkpoint)
    assert loaded.vocab.tokens == model.vocab.tokens and loaded.label_names == ["negative", "positive"]
    torch.testing.assert_close(loaded.probabilities(texts), model.probabilities(texts))
    assert [p for _, p in loaded.classify(texts)] == [p for _, p in model.classify(texts)]
    with pytest.raises(ValueError, match="text 1 is empty"):
        loaded.classify(["good", "   "])


def test_a_checkpoint_refuses_data_with_another_vocabulary(trained, tmp_path):
    _, checkpoint, _ = trained
    other = good_data(tmp_path, train=256, min_count=1000)  # only the specials
    model = SequenceClassifier(other.vocab_size, embedding_size=16, hidden_size=16, backend="torch")
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="vocabulary"):
        trainer.validate(model, other, ckpt_path=checkpoint, verbose=False)


def test_the_classify_command_prints_a_label_and_its_probability_per_input(trained, capsys, monkeypatch):
    model, checkpoint, _ = trained
    assert cli.main(["classify", "--ckpt", str(checkpoint), "--text", "good film", "--text", "a dull plot"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = model.classify(["good film", "a dull plot"])
    assert lines == [f"{label} {p:.3f}" for label, p in expected] and lines[0].startswith("positive ")
    monkeypatch.setattr("sys.stdin", io.StringIO("good film\n\nthe plot\n"))
    assert command.main(["--ckpt", str(checkpoint)]) == 1  # the empty line: reported, the others answered
    out = capsys.readouterr()
    assert out.out.splitlines()[1] == "" and len(out.out.splitlines()) == 3
    assert out.err.strip() == "lightning-rnn classify: error: input 2 is empty: nothing to classify"


def test_the_classify_command_rejects_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    from lightning_rnn.lm import LanguageModel
    from tests.test_errors import save_like_lightning

    assert cli.main(["classify", "--ckpt", str(tmp_path / "nope.ckpt"), "--text", "good"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"lightning-rnn classify: error: {tmp_path / 'nope.ckpt'}: no such checkpoint file"
    lm = save_like_lightning(LanguageModel(12, embedding_size=4, hidden_size=4, backend="torch"), tmp_path / "lm.ckpt")
    assert cli.main(["classify", "--ckpt", str(lm), "--text", "good"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a SequenceClassifier" in err, err


# -- the recipe, resume, the real files -----------------------------------------------------------

def test_the_recipe_fits_one_step_then_tests_its_checkpoint(tmp_path, monkeypatch):
    """The recipe unchanged but for sizes, on a tiny stand-in for the SST-2 files under a data root."""
    (tmp_path / "data" / "sst2").mkdir(parents=True)
    for split, seed in (("train", 1), ("dev", 2), ("test", 3)):
        write_label_first(tmp_path / "data" / "sst2" / f"stsa.binary.{split}", good_or_not(40, seed))
    monkeypatch.setenv("LIGHTNING_RNN_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    tiny = {"embedding_size": 8, "hidden_size": 4, "backend": "torch"}
    args = [f"--model.init_args.{key}={value}" for key, value in tiny.items()]
    args += ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    fit = cli.build_cli(["fit", "--config", str(RECIPE), *args, "--trainer.max_epochs=1",
                         "--data.init_args.batch_size=40"])  # 40 sentences: 1 step
    recipe = yaml.safe_load(RECIPE.read_text())
    hparams = fit.model.hparams
    assert hparams.vocab_size == fit.datamodule.vocab_size and hparams.num_classes == 2
    for key, value in recipe["model"]["init_args"].items():
        assert hparams[key] == tiny.get(key, value), key
    assert fit.trainer.global_step == 1
    best = tmp_path / "runs" / "sst2_bilstm" / "version_0" / "checkpoints" / "best.ckpt"
    assert best.is_file()
    test = cli.build_cli(["test", "--config", str(RECIPE), *args, "--ckpt_path", str(best)])
    assert {"test_acc", "test_f1", "test_loss"} <= test.trainer.callback_metrics.keys()
    assert command.main(["--ckpt", str(best), "--text", "Good film"]) == 0  # lowercase: true in the recipe


def _classify_setup(tmp_path: Path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = good_data(tmp_path, train=72, batch_size=8, bucket_batches=3)
    model = SequenceClassifier(data.vocab_size, embedding_size=8, hidden_size=8, num_layers=2, dropout=0.3,
                               word_dropout=0.1, lr=0.01, backend="torch")
    return model, data


@pytest.mark.parametrize("inside", [False, True], ids=["error-after-a-step", "error-inside-a-step"])
def test_a_stopped_run_resumes_bit_exactly_with_bucketed_batches(inside, tmp_path):
    from tests.test_resume import Stop, StopAt, assert_same_weights, fit

    straight, trainer = fit(_classify_setup, tmp_path / "straight")
    steps_per_epoch = trainer.num_training_batches
    assert steps_per_epoch == 9
    with pytest.raises(Stop):
        fit(_classify_setup, tmp_path / "stopped", [StopAt(steps_per_epoch + 4, inside)])
    resumed, trainer = fit(_classify_setup, tmp_path / "resumed",
                           ckpt_path=tmp_path / "stopped" / "ckpt" / "interrupted.ckpt")
    assert trainer.global_step == 2 * steps_per_epoch
    assert_same_weights(straight, resumed)


def test_without_skipping_the_finished_batches_the_resumed_run_would_differ(tmp_path, monkeypatch):
    """The test above can fail: a bucketed epoch restarted from its first batch changes the weights."""
    from tests.test_resume import Stop, StopAt, fit

    straight, trainer = fit(_classify_setup, tmp_path / "straight")
    with pytest.raises(Stop):
        fit(_classify_setup, tmp_path / "stopped", [StopAt(trainer.num_training_batches + 4, inside=False)])
    monkeypatch.setattr(TextClassificationData, "resume_batches", lambda self: 0)
    resumed, _ = fit(_classify_setup, tmp_path / "resumed", ckpt_path=tmp_path / "stopped" / "ckpt" / "interrupted.ckpt")
    assert not all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


SST2 = default_data_root() / "sst2"


@pytest.mark.skipif(not SST2.is_dir(), reason=f"SST-2 files absent: {SST2} (set LIGHTNING_RNN_DATA; see the recipe)")
def test_the_real_sst2_files_parse_with_the_published_counts():
    recipe = yaml.safe_load(RECIPE.read_text())["data"]["init_args"]
    assert resolve_data_path(recipe["train_file"]) == SST2 / "stsa.binary.train"
    data = TextClassificationData(**recipe)
    counts = {split: (len(data.examples(split)), sum(e.label for e in data.examples(split))) for split in
              ("train", "val", "test")}
    assert counts == {"train": (6920, 3610), "val": (872, 444), "test": (1821, 909)}  # SOURCE.md
    assert data.min_count == 2 and data.vocab_size == 4 + 7140  # specials + training words seen twice or more
    assert json.dumps(data.label_names) == '["negative", "positive"]'
