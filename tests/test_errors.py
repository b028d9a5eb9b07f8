"""Clear errors, nothing lost: the table of what users get wrong and the one line each gets.

- a missing, empty, truncated, corrupted or wrong-kind checkpoint given to ``generate``,
  ``translate`` or ``fit --ckpt_path``: exit status 2 and ONE line on stderr naming the file;
- a bad value in a configuration (Python or command line): rejected before training, naming
  the option;
- a run that fails never deletes or overwrites an existing checkpoint.
"""

from pathlib import Path

import pytest
import torch

from lightning_rnn import cli
from lightning_rnn.data import TextDataModule
from lightning_rnn.lm import LanguageModel
from lightning_rnn.seq2seq import GeneratedPairDataModule, Seq2Seq
from lightning_rnn.seq2seq.data import CharPairDataModule
from tests.test_cli import CrashAtStep, tiny_fit_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_like_lightning(model, path: Path) -> Path:
    """What Trainer.save_checkpoint writes, without training: enough to load and to be refused."""
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": "2.6.6"}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    lm = save_like_lightning(LanguageModel(12, embedding_size=4, hidden_size=4, backend="torch"), folder / "lm.ckpt")
    seq2seq = save_like_lightning(Seq2Seq(15, embed_dim=4, hidden_size=4, backend="torch"), folder / "seq2seq.ckpt")
    whole = lm.read_bytes()
    (folder / "truncated.ckpt").write_bytes(whole[: len(whole) // 2])
    corrupted = bytearray(whole)
    start = whole.index(b"data.pkl") + 60  # inside the pickled record, not the zip bookkeeping
    corrupted[start : start + 40] = b"!" * 40
    (folder / "corrupted.ckpt").write_bytes(bytes(corrupted))
    (folder / "empty.ckpt").write_bytes(b"")
    (folder / "text.ckpt").write_text("not a checkpoint\n")
    torch.save(torch.zeros(3), folder / "tensor.ckpt")
    (folder / "a_folder.ckpt").mkdir()
    return {p.stem: p for p in folder.iterdir()} | {"missing": folder / "missing.ckpt"}


CHECKPOINT_CASES = [
    # (command, checkpoint, what the one line says)
    ("generate", "missing", "no such checkpoint file"),
    ("generate", "a_folder", "is a folder"),
    ("generate", "empty", "is empty"),
    ("generate", "truncated", "truncated"),
    ("generate", "text", "not a PyTorch checkpoint"),
    ("generate", "corrupted", "is corrupted"),
    ("generate", "tensor", "not a Lightning checkpoint"),
    ("generate", "seq2seq", "not a LanguageModel"),
    ("translate", "lm", "not a Seq2Seq"),
    ("translate", "truncated", "truncated"),
    ("fit", "seq2seq", "not a LanguageModel"),
    ("fit", "corrupted", "is corrupted"),
]


@pytest.mark.parametrize("command, name, message", CHECKPOINT_CASES, ids=[f"{c}-{n}" for c, n, _ in CHECKPOINT_CASES])
def test_a_bad_checkpoint_gets_one_line_naming_the_file(command, name, message, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = str(files[name])
    argv = {
        "generate": ["generate", "--ckpt", path, "--prompt", "a"],
        "translate": ["translate", "--ckpt", path, "--input", "1+1"],
        "fit": ["fit", *tiny_fit_args(tmp_path), "--ckpt_path", path],
    }[command]
    assert cli.main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert path in lines[0] and message in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()  # refused before anything was written


BAD_VALUES = [
    # (class, arguments, option named in the error)
    (LanguageModel, {"vocab_size": 10, "hidden_size": -3}, "hidden_size"),
    (LanguageModel, {"vocab_size": 10, "embedding_size": 0}, "embedding_size"),
    (LanguageModel, {"vocab_size": 10, "num_layers": 0}, "num_layers"),
    (LanguageModel, {"vocab_size": 10, "dropout": 1.0}, "dropout"),
    (LanguageModel, {"vocab_size": 10, "dropout": -0.1}, "dropout"),
    (LanguageModel, {"vocab_size": 10, "cell": "lstn"}, "cell"),
    (TextDataModule, {"batch_size": 0}, "batch_size"),
    (TextDataModule, {"bptt": -5}, "bptt"),
    (Seq2Seq, {"vocab_size": 10, "hidden_size": 0}, "hidden_size"),
    (Seq2Seq, {"vocab_size": 10, "dropout": 1.5}, "dropout"),
    (Seq2Seq, {"vocab_size": 10, "cell": "transformer"}, "cell"),
    (GeneratedPairDataModule, {"batch_size": 0}, "batch_size"),
    (CharPairDataModule, {"batch_size": -1}, "batch_size"),
    (GeneratedPairDataModule, {"num_workers": -1}, "num_workers"),
]


def bad_value_id(cls: type, kwargs: dict, option: str) -> str:
    return f"{cls.__name__}-{option}={kwargs[option]}"


@pytest.mark.parametrize("cls, kwargs, option", BAD_VALUES, ids=[bad_value_id(*case) for case in BAD_VALUES])
def test_a_bad_value_is_refused_at_construction_naming_the_option(cls, kwargs, option):
    with pytest.raises(ValueError, match=rf"^{option} must"):
        cls(**kwargs)


CLI_BAD_VALUES = [
    ("--model.init_args.hidden_size", "-3", "hidden_size must be a positive integer"),
    ("--model.init_args.dropout", "1.0", "dropout must be in [0, 1)"),
    ("--data.init_args.batch_size", "0", "batch_size must be a positive integer"),
    ("--model.init_args.cell", "lstn", "cell"),
]


@pytest.mark.parametrize("option, value, message", CLI_BAD_VALUES, ids=[f"{o[2:]}={v}" for o, v, _ in CLI_BAD_VALUES])
def test_a_bad_value_on_the_command_line_stops_fit_before_training(option, value, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        status = cli.main(["fit", *tiny_fit_args(tmp_path), option, value])
    except SystemExit as exit_info:  # refused by the parser itself (a choice outside a Literal)
        status = exit_info.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "tiny").exists()


def test_a_failing_run_leaves_existing_checkpoints_byte_identical(tmp_path, monkeypatch, capsys):
    """Without a logger every run of a folder writes to <root>/checkpoints: the second run is refused."""
    monkeypatch.chdir(tmp_path)
    args = [*tiny_fit_args(tmp_path), "--trainer.logger", "false", "--trainer.max_epochs", "1"]
    cli.build_cli(["fit", *args])
    folder = tmp_path / "runs" / "tiny" / "checkpoints"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {"best.ckpt", "last.ckpt"} <= before.keys()

    assert cli.main(["fit", *args]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "already holds best.ckpt, last.ckpt from another run" in lines[-1], lines
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before

    # a crash in a run of its own (new version folder) does not touch them either
    crashed = cli.build_cli(tiny_fit_args(tmp_path), run=False)
    crashed.trainer.callbacks.append(CrashAtStep(2))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.trainer.fit(crashed.model, crashed.datamodule)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_tensorboard_without_the_package_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name, *args: None)
    assert cli.main(["fit", *tiny_fit_args(tmp_path), "--tensorboard", "true"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'lightning-rnn[tensorboard]'" in lines[0], lines
