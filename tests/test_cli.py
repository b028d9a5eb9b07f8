"""The lightning-rnn command: fit through LightningCLI, generate, delegated subcommands."""

import sys
import types
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_rnn import cli
from lightning_rnn.data import TextDataModule
from lightning_rnn.lm import LanguageModel


pytestmark = pytest.mark.usefixtures("one_torch_thread")


TEXT = "for i in range(10):\n    print(i)\n" * 20


def text_files(folder: Path) -> list[str]:
    args = []
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_text(TEXT)
        args += [f"--data.init_args.{split}_file", str(folder / f"{split}.txt")]
    return args


def tiny_fit_args(tmp_path: Path) -> list[str]:
    """A 2-epoch fit of a tiny character model on TEXT, logged to runs/tiny/version_N."""
    return [
        "--seed_everything", "0",
        "--model", "lightning_rnn.lm.LanguageModel", "--model.init_args.embedding_size", "8",
        "--model.init_args.hidden_size", "8", "--model.init_args.backend", "torch",
        "--data", "lightning_rnn.data.TextDataModule", "--data.init_args.level", "char",
        "--data.init_args.batch_size", "4", "--data.init_args.bptt", "10", *text_files(tmp_path),
        "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", "runs/tiny",
    ]


def test_fit_links_vocab_size_and_writes_best_and_last_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", *tiny_fit_args(tmp_path), "--model.init_args.optimizer", "adam",
            "--model.init_args.lr", "0.01", "--checkpoint.monitor", "val_ppl"]
    run = cli.build_cli(args)
    assert run.model.hparams.vocab_size == run.datamodule.vocab_size == len(set(TEXT)) + 1  # + <unk>
    checkpoints = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints"
    assert {p.name for p in checkpoints.iterdir()} == {"best.ckpt", "last.ckpt"}
    assert "val_ppl" in (tmp_path / "runs" / "tiny" / "version_0" / "metrics.csv").read_text()


class CrashAtStep(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_a_crash_mid_epoch_leaves_a_checkpoint_that_resumes_from_that_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crashed = cli.build_cli(tiny_fit_args(tmp_path), run=False)
    crashed.trainer.callbacks.append(CrashAtStep(3))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.trainer.fit(crashed.model, crashed.datamodule)
    folder = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints"
    assert {p.name for p in folder.iterdir()} == {"interrupted.ckpt"}  # no validation ran yet: nothing else saved
    saved = torch.load(folder / "interrupted.ckpt", weights_only=False)
    assert saved["global_step"] == 3
    for name, weight in crashed.model.state_dict().items():
        assert torch.equal(saved["state_dict"][name], weight), name

    resumed = cli.build_cli(["fit", *tiny_fit_args(tmp_path),
                             "--ckpt_path", str(folder / "interrupted.ckpt")])
    steps_per_epoch = resumed.trainer.num_training_batches
    assert steps_per_epoch > 3
    assert resumed.trainer.global_step == 2 * steps_per_epoch
    assert resumed.trainer.current_epoch == 2
    assert not (tmp_path / "runs" / "tiny" / "version_1" / "checkpoints" / "interrupted.ckpt").exists()


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    datamodule = TextDataModule(*[None] * 3, level="char", batch_size=4, bptt=10)
    datamodule.read_splits = lambda: {"train": TEXT, "valid": TEXT, "test": TEXT}
    model = LanguageModel(datamodule.vocab_size, embedding_size=8, hidden_size=8, backend="torch")
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=1)
    trainer.fit(model, datamodule)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    return tmp_path / "model.ckpt"


def test_generate_prints_prompt_and_continuation(checkpoint, capsys):
    argv = ["generate", "--ckpt", str(checkpoint), "--prompt", "for ", "--max_new_tokens", "15", "--seed", "3"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert first.startswith("for ") and len(first) == len("for ") + 15 + 1  # + print's newline
    cli.main(argv)
    assert capsys.readouterr().out == first  # seeded


@pytest.mark.parametrize(
    "extra, message",
    [(["--prompt", "for ☃"], "outside the vocabulary")],
    ids=["prompt-outside-vocabulary"],  # bad checkpoints: tests/test_errors.py
)
def test_generate_reports_bad_input(checkpoint, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--ckpt", str(checkpoint), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_delegated_commands_call_main_with_the_remaining_arguments(monkeypatch):
    received = []
    fake = types.ModuleType("fake_translate")
    fake.main = lambda argv: received.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fake_translate", fake)
    monkeypatch.setitem(cli.DELEGATED, "translate", "fake_translate")
    assert cli.main(["translate", "--ckpt", "x.ckpt"]) == 0
    assert received == [["--ckpt", "x.ckpt"]]


def test_missing_delegate_and_unknown_command_are_clear_errors(monkeypatch, capsys):
    monkeypatch.setitem(cli.DELEGATED, "bench", "lightning_rnn_no_such_module.bench")
    assert cli.main(["bench"]) == 2
    assert "lightning_rnn_no_such_module.bench is not available" in capsys.readouterr().err
    assert cli.main(["train"]) == 2
    assert "unknown command 'train'" in capsys.readouterr().err


@pytest.mark.parametrize("tensorboard", [False, True], ids=["csv", "csv+tensorboard"])
def test_default_root_dir_moves_logs_config_and_checkpoints(tensorboard, tmp_path, monkeypatch):
    if tensorboard:
        pytest.importorskip("tensorboard", reason="TensorBoard is optional: pip install 'lightning-rnn[tensorboard]'")
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere" / "exp"
    args = ["fit", *tiny_fit_args(tmp_path), "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(elsewhere)]
    for version in (0, 1):  # a second run gets a folder of its own
        cli.build_cli([*args, "--tensorboard", str(tensorboard).lower()])
        run = elsewhere / f"version_{version}"
        assert {"metrics.csv", "config.yaml"} <= {p.name for p in run.iterdir()}
        assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
        assert bool(list(run.glob("events.out.tfevents.*"))) == tensorboard
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lightning_logs").exists()


def test_periodic_last_checkpoint_is_written_every_n_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crashed = cli.build_cli([*tiny_fit_args(tmp_path), "--periodic_checkpoint.every_n_train_steps", "2",
                             "--interrupted.filename", "unused"], run=False)
    crashed.trainer.callbacks.append(CrashAtStep(3))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.trainer.fit(crashed.model, crashed.datamodule)
    last = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2  # what a killed process leaves
