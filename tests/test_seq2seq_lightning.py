"""Seq2Seq through Lightning: the CLI and recipes, checkpoints that translate, 2-process DDP."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_rnn.cli import build_cli
from lightning_rnn.cli import main as cli_main
from lightning_rnn.data.text import resolve_data_path
from lightning_rnn.seq2seq import Seq2Seq, translate
from lightning_rnn.seq2seq.data import GeneratedPairDataModule
from tests.distributed import LeaveTogether

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
GENERATED = ["--data", "lightning_rnn.seq2seq.data.GeneratedPairDataModule"]


@pytest.mark.parametrize(
    "recipe,overrides,expected",
    [
        ("seq2seq_addition.yaml", [], {"reverse_source": True, "peeky": True, "attention": "none"}),
        ("seq2seq_addition.yaml", ["--model.init_args.peeky", "false"], {"reverse_source": True, "peeky": False}),
        ("seq2seq_addition.yaml", ["--model.init_args.peeky", "false", "--model.init_args.reverse_source", "false"],
         {"reverse_source": False, "peeky": False}),
        ("seq2seq_date_attention.yaml", [], {"reverse_source": True, "attention": "dot", "hidden_size": 256}),
        ("seq2seq_addition.yaml", [*GENERATED, "--data.init_args.task", "addition"], {"peeky": True}),
        ("seq2seq_date_attention.yaml", [*GENERATED, "--data.init_args.task", "date"], {"attention": "dot"}),
    ],
    ids=["addition-reverse-peeky", "addition-reverse", "addition-plain", "date-attention",
         "addition-generated", "date-generated"],
)
def test_recipes_parse_and_link_the_vocabulary(recipe, overrides, expected):
    data_file = "dlfs2-seq2seq/addition.txt" if "addition" in recipe else "dlfs2-seq2seq/date.txt"
    if GENERATED[1] not in overrides and not resolve_data_path(data_file).exists():
        pytest.skip(f"{data_file} absent: set LIGHTNING_RNN_DATA to the folder holding dlfs2-seq2seq/")
    cli = build_cli(["--config", str(RECIPES / recipe), *overrides], run=False)  # build, don't train
    assert isinstance(cli.model, Seq2Seq)
    assert cli.model.hparams.vocab_size == cli.datamodule.vocab_size
    for key, value in expected.items():
        assert cli.model.hparams[key] == value
    if GENERATED[1] in overrides:
        assert isinstance(cli.datamodule, GeneratedPairDataModule) and cli.datamodule.batch_size == 128


def _write_copy_reverse_tsv(path: Path) -> None:
    words = ["".join(s) for n in range(1, 5) for s in itertools.product("abcd", repeat=n)]
    path.write_text("".join(f"{w}\t{w[::-1]}\n" for w in words))


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    """Fit a small reverse+attention model with `lightning-rnn fit` on a copy-and-reverse file."""
    tmp = tmp_path_factory.mktemp("seq2seq_cli")
    _write_copy_reverse_tsv(tmp / "pairs.tsv")
    config = {
        "seed_everything": 0,
        "model": {"class_path": "lightning_rnn.seq2seq.Seq2Seq",
                  "init_args": {"embed_dim": 16, "hidden_size": 64, "attention": "general", "lr": 0.01,
                                "backend": "torch", "num_examples": 2}},
        "data": {"class_path": "lightning_rnn.seq2seq.data.PairsFileDataModule",
                 "init_args": {"train_file": str(tmp / "pairs.tsv"), "val_file": str(tmp / "pairs.tsv"),
                               "batch_size": 32}},
        "trainer": {"max_epochs": 30, "check_val_every_n_epoch": 30, "gradient_clip_val": 5.0,
                    "default_root_dir": str(tmp), "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "num_sanity_val_steps": 0},
        "checkpoint": {"dirpath": str(tmp / "ckpt"), "monitor": "val_exact_match", "mode": "max"},
    }
    (tmp / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    assert cli_main(["fit", "--config", str(tmp / "config.yaml")]) == 0
    return tmp / "ckpt" / "best.ckpt"


def test_fit_then_translate_from_the_checkpoint(trained_checkpoint, capsys):
    model = Seq2Seq.load_from_checkpoint(trained_checkpoint, map_location="cpu")
    assert model.translate(["abcd", "dab", "c"]) == ["dcba", "bad", "c"]
    assert model.translate(["abcd"], beam_size=3) == ["dcba"]

    assert translate.main(["--ckpt", str(trained_checkpoint), "--input", "abca", "--input", "bd"]) == 0
    assert capsys.readouterr().out.split() == ["acba", "db"]


def test_translate_reads_stdin_and_reports_bad_lines(trained_checkpoint, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("abc\nabz\n\ndd\n"))
    assert cli_main(["translate", "--ckpt", str(trained_checkpoint)]) == 1
    out = capsys.readouterr()
    assert out.out.split("\n")[:4] == ["cba", "", "", "dd"]  # one output line per input line
    assert "input 2: character 'z' at position 2 of 'abz' is not in the vocabulary" in out.err
    assert "input 3: empty source: nothing to translate" in out.err


def test_translate_rejects_a_missing_checkpoint(tmp_path, capsys):
    assert translate.main(["--ckpt", str(tmp_path / "nope.ckpt"), "--input", "1+1"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err  # more bad checkpoints: tests/test_errors.py


class RecordPerRank(L.Callback):
    """Each rank writes its synced validation metrics; rank 0 also saves the weights."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_validation_end(self, trainer, pl_module) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(metrics))
        if trainer.global_rank == 0:
            torch.save(pl_module.state_dict(), Path(self.folder, "weights.pt"))


def test_two_process_ddp_trains_and_syncs_metrics(tmp_path):
    def datamodule():
        return GeneratedPairDataModule("addition", train_size=256, val_size=64, test_size=64, max_digits=2,
                                       seed=5, batch_size=16)

    model = Seq2Seq(datamodule().vocab_size, hidden_size=32, reverse_source=True, peeky=True, lr=0.01,
                    backend="torch")
    ddp = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=0, callbacks=[RecordPerRank(str(tmp_path)), LeaveTogether()])
    ddp.fit(model, datamodule())
    per_rank = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert per_rank[0] == per_rank[1]

    # The synced numbers are those of one process validating all 64 examples with the same weights.
    single = Seq2Seq(datamodule().vocab_size, hidden_size=32, reverse_source=True, peeky=True, backend="torch")
    single.load_state_dict(torch.load(tmp_path / "weights.pt"))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    (whole,) = trainer.validate(single, datamodule(), verbose=False)
    for name in ("val_loss", "val_token_accuracy", "val_exact_match", "val_cer", "val_bleu"):
        assert per_rank[0][name] == pytest.approx(whole[name], abs=1e-5), name
    assert whole["val_token_accuracy"] > 0.3  # it trained (chance is about 1/11)
    # decoded examples are kept for inspection: (source, decoded, reference) of the first batch
    val_pairs = datamodule().splits["val"][:3]
    assert [(src, ref) for src, _, ref in single.examples] == val_pairs


@pytest.mark.parametrize("recipe,task", [("seq2seq_addition.yaml", "addition"), ("seq2seq_date_attention.yaml", "date")],
                         ids=["addition", "date"])
def test_recipe_runs_a_tiny_step_on_generated_data(recipe, task, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ lands in tmp_path
    small = ["--data.init_args.train_size=64", "--data.init_args.val_size=16", "--data.init_args.test_size=16",
             "--data.init_args.batch_size=8"]
    run = build_cli(["fit", "--config", str(RECIPES / recipe), *GENERATED, f"--data.init_args.task={task}", *small,
                     "--model.init_args.hidden_size=16", "--model.init_args.backend=torch",
                     "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false"])
    assert run.trainer.global_step == 1
    assert run.model.vocab is run.datamodule.vocab  # handed over at setup, saved in checkpoints
