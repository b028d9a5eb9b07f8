"""Exact resume: a run stopped mid-epoch and resumed ends with bit-identical weights.

Each case trains a tiny model with dropout (so the random state matters) for 2 epochs straight,
then again stopped at some step and resumed from the checkpoint it left, and compares every
parameter with ``torch.equal``. Stops: an error after a step (``on_train_batch_end``), an error
inside a step (after the backward pass: the step must run again), and a process that died after
a periodic ``last.ckpt`` (every N steps), mid-epoch and at an epoch's last batch.
"""

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_rnn.data import TextDataModule
from lightning_rnn.data.resumable import EpochSampler
from lightning_rnn.interrupted import SaveOnInterrupt
from lightning_rnn.lm import LanguageModel
from lightning_rnn.seq2seq import GeneratedPairDataModule, Seq2Seq

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXT = "def add(a, b):\n    return a + b\n\nclass Point:\n    x = 0\n" * 6


class Stop(Exception):
    pass


class StopAt(L.Callback):
    """Raise at training step ``step``: after it (on_train_batch_end) or inside it (after backward)."""

    def __init__(self, step: int, inside: bool) -> None:
        self.step, self.inside = step, inside

    def on_after_backward(self, trainer, pl_module) -> None:
        if self.inside and trainer.global_step == self.step:
            raise Stop(f"inside step {self.step}")

    def on_train_batch_end(self, trainer, *args) -> None:
        if not self.inside and trainer.global_step == self.step:
            raise Stop(f"after step {self.step}")


def lm_setup(tmp_path: Path):
    data = TextDataModule(level="char", batch_size=3, bptt=9, eval_batch_size=2)
    data.read_splits = lambda: {"train": TEXT, "valid": TEXT[:80], "test": TEXT[:80]}
    model = LanguageModel(data.vocab_size, embedding_size=8, hidden_size=8, num_layers=2, dropout=0.3,
                          optimizer="adam", lr=0.01, backend="torch")
    return model, data


def seq2seq_setup(tmp_path: Path):
    data = GeneratedPairDataModule(task="addition", train_size=40, val_size=8, test_size=8, max_digits=2, batch_size=6)
    model = Seq2Seq(data.vocab_size, embed_dim=8, hidden_size=8, num_layers=2, dropout=0.3, lr=0.01, backend="torch")
    return model, data


def fit(setup, tmp_path: Path, callbacks=(), ckpt_path=None, every_n_train_steps=None):
    L.seed_everything(7)
    model, data = setup(tmp_path)
    callbacks = list(callbacks)
    if every_n_train_steps:
        callbacks.append(ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=0, save_last=True,
                                         every_n_train_steps=every_n_train_steps))
    else:
        callbacks += [ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=0), SaveOnInterrupt()]
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=1, callbacks=callbacks,
                        default_root_dir=tmp_path)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return model, trainer


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("setup", [lm_setup, seq2seq_setup], ids=["lm", "seq2seq"])
@pytest.mark.parametrize("inside", [False, True], ids=["error-after-a-step", "error-inside-a-step"])
def test_a_run_stopped_by_an_error_mid_epoch_resumes_bit_exactly(setup, inside, tmp_path):
    straight, trainer = fit(setup, tmp_path / "straight")
    steps_per_epoch = trainer.num_training_batches
    stop_at = steps_per_epoch + 2  # in the middle of the second epoch
    assert 2 < steps_per_epoch
    with pytest.raises(Stop):
        fit(setup, tmp_path / "stopped", [StopAt(stop_at, inside)])
    resumed, trainer = fit(setup, tmp_path / "resumed", ckpt_path=tmp_path / "stopped" / "ckpt" / "interrupted.ckpt")
    assert trainer.global_step == 2 * steps_per_epoch
    assert_same_weights(straight, resumed)


@pytest.mark.parametrize("where", ["mid-epoch", "last-batch-of-an-epoch"])
def test_a_killed_lm_run_resumes_from_its_periodic_last_checkpoint_bit_exactly(where, tmp_path):
    straight, trainer = fit(lm_setup, tmp_path / "straight")
    steps_per_epoch = trainer.num_training_batches
    every = 3 if where == "mid-epoch" else steps_per_epoch
    assert steps_per_epoch % 3 != 0 if where == "mid-epoch" else True
    with pytest.raises(Stop):  # "killed" two steps after the periodic save: those steps are lost
        fit(lm_setup, tmp_path / "stopped", [StopAt(every + 2, inside=False)], every_n_train_steps=every)
    last = tmp_path / "stopped" / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == every
    resumed, trainer = fit(lm_setup, tmp_path / "resumed", ckpt_path=last)
    assert trainer.global_step == 2 * steps_per_epoch
    assert_same_weights(straight, resumed)


def test_without_resume_data_the_run_would_differ(tmp_path, monkeypatch):
    """The test above can fail: skipping the data position makes the weights differ."""
    straight, trainer = fit(lm_setup, tmp_path / "straight")
    with pytest.raises(Stop):
        fit(lm_setup, tmp_path / "stopped", [StopAt(trainer.num_training_batches + 2, inside=False)])
    monkeypatch.setattr(TextDataModule, "resume_batches", lambda self: 0)
    resumed, _ = fit(lm_setup, tmp_path / "resumed", ckpt_path=tmp_path / "stopped" / "ckpt" / "interrupted.ckpt")
    assert not all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffled", "in-order"])
def test_epoch_sampler_order_depends_only_on_seed_and_epoch_and_skips_once(shuffle):
    sampler = EpochSampler(17, shuffle, seed=3)
    sampler.set_epoch(1)
    first = list(sampler)
    torch.manual_seed(0)  # the global random state plays no part
    assert sorted(first) == list(range(17)) and list(sampler) == first
    sampler.skip_once(5)
    assert list(sampler) == first[5:] and list(sampler) == first
    sampler.set_epoch(2)
    assert (list(sampler) != first) == shuffle
