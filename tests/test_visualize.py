"""lightning_rnn.visualize: replayed states, text features, the unit search, and `lightning-rnn visualize`."""
from __future__ import annotations

import json
import os
import random
from html.parser import HTMLParser

import lightning as L
import pytest
import torch

from lightning_rnn import cli
from lightning_rnn.data.text import TextDataModule
from lightning_rnn.data.vocabulary import Vocabulary
from lightning_rnn.lm import LanguageModel
from lightning_rnn.lm.model import VOCAB_KEY
from lightning_rnn.visualize import Activations, best_units, capture, gate_saturation, token_features
from lightning_rnn.visualize.features import code_features
from lightning_rnn.visualize.search import pearson

CODE = 'x = f("a(b", [1])  # "no"\n    y = """doc\n"q""""\n'


def untrained(cell: str, level: str, text: str, **sizes) -> LanguageModel:
    vocab = Vocabulary.build(text, level)
    model = LanguageModel(len(vocab), cell=cell, backend="torch", **{"embedding_size": 6, "hidden_size": 7, **sizes})
    model.vocab = vocab
    return model.eval()


def save(model: LanguageModel, path) -> str:
    """A checkpoint as `lightning-rnn fit` writes one (weights, hyper-parameters, vocabulary)."""
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": L.__version__, VOCAB_KEY: model.vocab.to_dict()}, path)
    return str(path)


@pytest.mark.parametrize("cell, level, sizes", [
    ("lstm", "char", {"num_layers": 2, "hidden_size": 17}),
    ("lstm", "char", {"num_layers": 1, "proj_size": 3, "hidden_size": 5}),
    ("gru", "word", {"num_layers": 2, "hidden_size": 1}),
    ("rnn", "char", {"num_layers": 3, "hidden_size": 5}),
], ids=["lstm-2x17", "lstm-proj3", "gru-word-2x1", "rnn-3x5"])
def test_replayed_states_are_the_models_own(cell, level, sizes):
    model = untrained(cell, level, CODE, **sizes)
    acts = capture(model, CODE)
    ids = torch.tensor([model.vocab.encode(CODE)])
    with torch.no_grad():
        output, state = model.rnn(model.embedding(ids))
    h_n, c_n = state if cell == "lstm" else (state, None)
    assert len(acts.layers) == sizes["num_layers"] and len(acts.tokens) == ids.shape[1]
    torch.testing.assert_close(acts.layers[-1]["h"], output[0], rtol=1e-5, atol=1e-6)
    for layer, signals in enumerate(acts.layers):
        torch.testing.assert_close(signals["h"][-1], h_n[layer, 0], rtol=1e-5, atol=1e-6)
        if cell == "lstm":
            torch.testing.assert_close(signals["c"][-1], c_n[layer, 0], rtol=1e-5, atol=1e-6)
            assert set(signals) == {"h", "c", "i", "f", "g", "o"}
            assert 0 <= signals["f"].min() and signals["f"].max() <= 1
    assert capture(model, CODE, max_tokens=4).layers[0]["h"].shape[0] == 4


def test_code_features_by_hand():
    got = {name: "".join(str(int(v))[-1] for v in values) for name, values in code_features(CODE).items()}
    # x = f("a(b", [1])  # "no"N    y = """docN"q""""N   (N = newline)
    assert got["in_string"] == "000000111100000000000000000000000011111111111010"  # comment quotes ignored
    assert got["bracket_depth"] == "000001111111122100000000000000000000000000000000"  # "(" in a string ignored
    assert got["indentation"] == "000000000000000000000000001234444444444400000000"
    assert got["position_in_line"] == "123456789012345678901234501234567890123401234560"


def test_prose_and_word_level_features():
    chars = token_features(list('a "b c" d'), "char", "prose")
    assert chars["in_quotes"].tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0]
    words = token_features(["say", '"hi', 'there"', "<eos>", "ok"], "word", "prose")
    assert words["in_quotes"].tolist() == [0, 1, 0, 0, 0]
    assert words["position_in_line"].tolist() == [4, 8, 15, 0, 3]  # a word and its space; <eos> ends the line


def test_pearson_matches_torch_and_a_constant_unit_scores_zero():
    signals = torch.randn(50, 4)
    signals[:, 2] = 0.5
    feature = torch.randn(50)
    r = pearson(signals, feature)
    expected = torch.corrcoef(torch.cat([signals, feature[:, None]], 1).T)[-1, :-1]
    torch.testing.assert_close(r[[0, 1, 3]], expected[[0, 1, 3]], rtol=1e-5, atol=1e-6)
    assert r[2] == 0


def test_gate_saturation_counts_steps_beyond_the_thresholds():
    f = torch.tensor([[0.05, 0.5], [0.95, 0.5], [0.99, 0.09], [0.5, 0.91]])
    layer = {"h": torch.zeros(4, 2), "c": torch.zeros(4, 2), "i": f, "f": f.flip(0), "g": f, "o": f}
    left, right = gate_saturation(Activations(list("abcd"), "char", "lstm", [layer]))[0]["i"]
    assert left.tolist() == [0.25, 0.25] and right.tolist() == [0.5, 0.25]
    assert gate_saturation(Activations(list("ab"), "char", "rnn", [{"h": torch.zeros(2, 3)}])) == {0: {}}


def quotes_text(lines: int, seed: int) -> str:
    """Lower-case words with an upper-case quotation in each line: predicting the case of the
    next letter needs to know whether a quote is open, so a trained model tracks it."""
    rng = random.Random(seed)
    words = ["tom", "ann", "said", "ran", "to", "the", "big", "red", "dog", "and", "cat", "sat"]
    out = []
    for _ in range(lines):
        quote = " ".join(rng.choice(words).upper() for _ in range(rng.randint(1, 4)))
        before = " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
        after = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
        out.append(f'{before} "{quote}" {after}.')
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[str, int]:
    """A character-level LSTM trained for 400 steps (~4 s) on `quotes_text`, from a fresh seed."""
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    text = quotes_text(600, seed)
    datamodule = TextDataModule(*[None] * 3, level="char", batch_size=16, bptt=50)
    datamodule.read_splits = lambda: {"train": text, "valid": text[:500], "test": text[:500]}
    model = LanguageModel(datamodule.vocab_size, embedding_size=16, hidden_size=32, num_layers=1,
                          optimizer="adam", lr=0.01, backend="torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    trainer = L.Trainer(max_steps=400, max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path_factory.mktemp("fit"))
    trainer.fit(model, datamodule)
    torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("ckpt") / "quotes.ckpt"
    trainer.save_checkpoint(path)
    return str(path), seed


class PageCheck(HTMLParser):
    """Checks that every tag is closed in order, and counts unit blocks and coloured tokens."""

    VOID = {"meta", "input", "br"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.sections: list[str] = []
        self.spans = 0
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag == "a":
            self.links.append(attrs["href"].removeprefix("#"))
        if tag == "span" and attrs.get("class", "").startswith("a"):
            self.spans += 1
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"</{tag}> closes {self.open[-1:]}"


def read_png(path):
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_visualize_finds_the_quote_unit_and_writes_valid_files(trained, tmp_path, capsys):
    ckpt, seed = trained
    text_file = tmp_path / "held_out.txt"
    text_file.write_text(quotes_text(40, seed + 1))
    out = tmp_path / "viz"
    assert cli.main(["visualize", "--ckpt", ckpt, "--text", str(text_file), "--out", str(out), "--kind", "prose"]) == 0
    printed = capsys.readouterr().out

    summary = json.loads((out / "summary.json").read_text())
    best = summary["best_units"]["in_quotes"][0]
    # Untrained, the best unit reaches |r| ~0.5-0.6 (upper-case letters alone); after 400 steps 0.82-0.98 (10 seeds).
    assert abs(best["r"]) > 0.7, f"best in_quotes unit {best} (seed {seed})"
    assert f"{best['unit']}" in printed and f"{best['r']:+.3f}" in printed
    assert summary["tokens"] == len(text_file.read_text()) and summary["text_kind"] == "prose"
    assert {row["gate"] for row in summary["saturation"]} == {"i", "f", "o"}

    for name in ("heatmap.png", "saturation.png"):
        image = read_png(out / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 200 and image.std() > 0.05, name
    page = (out / "units.html").read_text()
    check = PageCheck()
    check.feed(page)
    check.close()
    assert check.open == []
    assert len(check.sections) == len(summary["shown_units"]) == 8  # --show default
    assert check.spans == len(check.sections) * summary["tokens"] + 3  # every character of every block, + the key
    assert f"{best['r']:+.3f}" in page and "<script" in page and "http" not in page  # offline: nothing fetched
    assert set(check.links) <= set(check.sections) and check.links  # the table links only to blocks on the page


def test_selected_units_and_layer(trained, tmp_path):
    ckpt, _ = trained
    argv = ["visualize", "--ckpt", ckpt, "--prompt", 'ann said "TOM RAN" to the dog.\n', "--out", str(tmp_path),
            "--units", "0,31", "--layer", "0", "--heatmap_chars", "20"]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["shown_units"] == ["L0.c[0]", "L0.h[0]", "L0.c[31]", "L0.h[31]"]
    assert summary["text_kind"] == "prose"


@pytest.mark.parametrize("cell, level", [("gru", "word"), ("rnn", "char")])
def test_visualize_other_cells_and_word_level(tmp_path, cell, level, capsys):
    model = untrained(cell, level, CODE, num_layers=2)
    ckpt = save(model, tmp_path / "m.ckpt")
    assert cli.main(["visualize", "--ckpt", ckpt, "--prompt", CODE, "--out", str(tmp_path / "v"), "--show", "3"]) == 0
    summary = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert summary["text_kind"] == "code" and summary["level"] == level
    features = {"in_string", "bracket_depth", "indentation", "position_in_line"}
    assert set(summary["best_units"]) == features - ({"indentation"} if level == "word" else set())  # words drop spaces
    shown, ranked = summary["shown_units"], [[m["unit"] for m in ms] for ms in summary["best_units"].values()]
    assert len(shown) == 3 and shown[0] == ranked[0][0]  # the best units of the search, the best first
    assert all(any(u in ms for ms in ranked) for u in shown)
    assert (tmp_path / "v" / "saturation.png").exists() == (cell == "gru")  # an Elman RNN has no gates
    assert read_png(tmp_path / "v" / "heatmap.png").shape[1] > 500


@pytest.mark.parametrize("case, extra, message", [
    ("missing checkpoint", ["--ckpt", "{tmp}/nope.ckpt"], "--ckpt: no such checkpoint file"),
    ("not a checkpoint", ["--ckpt", "{tmp}/junk.ckpt"], "cannot load a LanguageModel"),
    ("unit out of range", ["--units", "7"], "--units must be in [0, 6]"),
    ("units not numbers", ["--units", "a,b"], "--units must be comma-separated integers"),
    ("layer out of range", ["--layer", "2"], "--layer must be in [0, 1]"),
    ("empty prompt", ["--prompt", "  "], "the text is empty"),
    ("zero max_chars", ["--max_chars", "0"], "--max_chars must be a positive integer"),
])
def test_bad_arguments_are_clear_errors(tmp_path, capsys, case, extra, message):
    (tmp_path / "junk.ckpt").write_bytes(b"!not a checkpoint")
    argv = ["--ckpt", save(untrained("lstm", "char", CODE, num_layers=2), tmp_path / "m.ckpt"), "--prompt", "x = 1\n"]
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    for i in range(0, len(extra), 2):  # override the default option, or add it
        if extra[i] in argv:
            argv[argv.index(extra[i]) + 1] = extra[i + 1]
        else:
            argv += extra[i:i + 2]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["visualize", *argv, "--out", str(tmp_path / "v")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "v").exists()  # nothing written
