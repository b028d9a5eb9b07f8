"""LanguageModel: tied weights, truncated BPTT, perplexity, generation, checkpoints."""

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lightning_rnn.data import TextDataModule, batchify
from lightning_rnn.lm import LanguageModel


pytestmark = pytest.mark.usefixtures("one_torch_thread")


TRAIN = "def add(a, b):\n    return a + b\n\nclass Point:\n    x = 0\n" * 12
VALID = "def sub(a, b):\n    return a - b\n" * 3
TEST = "class Line:\n    y = 1\n" * 3


def char_data(folder: Path, train: str = TRAIN, batch_size: int = 3, bptt: int = 7, eval_batch_size: int = 2) -> TextDataModule:
    files = {}
    for split, text in (("train", train), ("valid", VALID), ("test", TEST)):
        (folder / f"{split}.txt").write_text(text)
        files[f"{split}_file"] = str(folder / f"{split}.txt")
    return TextDataModule(**files, level="char", batch_size=batch_size, bptt=bptt, eval_batch_size=eval_batch_size)


def tiny_model(vocab_size: int, **overrides) -> LanguageModel:
    args = dict(embedding_size=8, hidden_size=8, num_layers=2, optimizer="adam", lr=0.01, backend="torch")
    return LanguageModel(vocab_size, **{**args, **overrides})


def trainer(tmp_path: Path, **overrides) -> L.Trainer:
    args = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    return L.Trainer(**{**args, **overrides})


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_forward_shapes(cell):
    model = tiny_model(11, cell=cell)
    logits, state = model(torch.randint(0, 11, (4, 5)))
    assert logits.shape == (4, 5, 11)
    h = state[0] if cell == "lstm" else state
    assert h.shape == (2, 4, 8)


def test_tied_weights_share_storage_through_a_checkpoint_round_trip(tmp_path):
    datamodule = char_data(tmp_path)
    model = tiny_model(datamodule.vocab_size, tie_weights=True)
    assert model.decoder.weight is model.embedding.weight
    fit = trainer(tmp_path, max_steps=3)
    fit.fit(model, datamodule)
    fit.save_checkpoint(tmp_path / "tied.ckpt")
    loaded = LanguageModel.load_from_checkpoint(tmp_path / "tied.ckpt")
    assert loaded.decoder.weight.data_ptr() == loaded.embedding.weight.data_ptr()
    assert torch.equal(loaded.embedding.weight, model.embedding.weight)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())


def test_tying_different_sizes_uses_the_lstm_projection_or_says_how():
    projected = tiny_model(11, hidden_size=16, proj_size=8, tie_weights=True)
    assert projected.decoder.weight is projected.embedding.weight
    with pytest.raises(ValueError, match="tie_weights.*proj_size=8"):
        tiny_model(11, hidden_size=16, tie_weights=True)
    with pytest.raises(ValueError, match="proj_size is only supported with cell='lstm'"):
        tiny_model(11, cell="gru", hidden_size=16, proj_size=8, tie_weights=True)


def test_state_is_carried_between_batches_reset_each_epoch_and_kept_apart_for_validation(tmp_path):
    datamodule = char_data(tmp_path, bptt=20)
    model = tiny_model(datamodule.vocab_size)
    calls = {True: [], False: []}  # rnn.training -> [(state in, state out)]
    model.rnn.register_forward_hook(lambda module, args, output: calls[module.training].append((args[1], output[1])))
    windows_per_epoch = len(datamodule.train_dataloader())
    # validation interleaved every 4 training windows must not disturb the training state
    trainer(tmp_path, max_epochs=2, val_check_interval=4, limit_val_batches=3, num_sanity_val_steps=0).fit(model, datamodule)

    train_calls = calls[True]
    assert len(train_calls) == 2 * windows_per_epoch
    for index, (state_in, _) in enumerate(train_calls):
        if index % windows_per_epoch == 0:
            assert state_in is None, "state must be reset at epoch start"
        else:
            previous_out = train_calls[index - 1][1]
            for given, expected in zip(state_in, previous_out):
                assert torch.equal(given, expected) and not given.requires_grad
    val_calls = calls[False]
    assert len(val_calls) % 3 == 0 and len(val_calls) > 0
    for index, (state_in, _) in enumerate(val_calls):
        if index % 3 == 0:
            assert state_in is None
        else:
            assert all(torch.equal(a, b) for a, b in zip(state_in, val_calls[index - 1][1]))


def test_validation_perplexity_is_exp_of_mean_token_nll_over_the_split(tmp_path):
    datamodule = char_data(tmp_path, bptt=5, eval_batch_size=2)
    model = tiny_model(datamodule.vocab_size)
    reported = trainer(tmp_path).validate(model, datamodule, verbose=False)[0]["val_ppl"]

    # by hand: each stream in one pass (no windows), mean NLL over every predicted token
    streams = batchify(datamodule.tokens("valid"), 2)
    model.eval()
    with torch.no_grad():
        logits, _ = model(streams[:, :-1])
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), streams[:, 1:].reshape(-1), reduction="sum")
    expected = torch.exp(nll / streams[:, 1:].numel()).item()
    assert reported == pytest.approx(expected, rel=1e-5)
    assert streams.shape[1] - 1 > 5 and (streams.shape[1] - 1) % 5 != 0  # several windows, a short last one


def test_validate_before_fit_then_fit_again(tmp_path):
    datamodule = char_data(tmp_path, bptt=20)
    model = tiny_model(datamodule.vocab_size)
    fit = trainer(tmp_path, limit_train_batches=3, limit_val_batches=2)
    before = fit.validate(model, datamodule, verbose=False)[0]["val_ppl"]
    fit.fit(model, datamodule)
    after = fit.validate(model, datamodule, verbose=False)[0]["val_ppl"]
    assert after < before


def greedy_by_full_recompute(model: LanguageModel, ids: list[int], steps: int) -> list[int]:
    """Reference greedy decoding that re-reads the whole prefix each step (no carried state)."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    return ids


def test_generate_from_a_checkpoint_needs_no_data_files(tmp_path):
    datamodule = char_data(tmp_path)
    model = tiny_model(datamodule.vocab_size)
    fit = trainer(tmp_path, max_steps=20)
    fit.fit(model, datamodule)
    fit.save_checkpoint(tmp_path / "lm.ckpt")
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").unlink()

    loaded = LanguageModel.load_from_checkpoint(tmp_path / "lm.ckpt")
    sample = loaded.generate("def ", max_new_tokens=30, temperature=0.9, top_k=5, seed=7)
    assert len(sample) == 30 and set(sample) <= set(TRAIN)
    assert sample == loaded.generate("def ", max_new_tokens=30, temperature=0.9, top_k=5, seed=7)

    prompt_ids = loaded.vocab.encode("def ")
    expected = loaded.vocab.decode(greedy_by_full_recompute(loaded.eval(), prompt_ids, 12)[len(prompt_ids):])
    assert loaded.generate("def ", max_new_tokens=12, temperature=0) == expected


def test_prompt_outside_the_vocabulary_is_a_clear_error(tmp_path):
    datamodule = char_data(tmp_path)
    model = tiny_model(datamodule.vocab_size)
    model.vocab = datamodule.vocab
    with pytest.raises(ValueError, match="outside the vocabulary.*'€'"):
        model.generate("def €", max_new_tokens=3)
    with pytest.raises(RuntimeError, match="no vocabulary"):
        tiny_model(datamodule.vocab_size).generate("def ")


def test_checkpoint_with_another_vocabulary_is_refused(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    data_a = char_data(tmp_path / "a")
    data_b = char_data(tmp_path / "b", train=TRAIN.replace("d", "D"))  # same size, one token differs
    assert data_a.vocab_size == data_b.vocab_size and data_a.vocab != data_b.vocab
    fit = trainer(tmp_path, max_steps=2)
    fit.fit(tiny_model(data_a.vocab_size), data_a)
    fit.save_checkpoint(tmp_path / "a.ckpt")
    with pytest.raises(ValueError, match="does not match"):
        trainer(tmp_path).validate(tiny_model(data_b.vocab_size), data_b, ckpt_path=tmp_path / "a.ckpt")


def fit_seeded(tmp_path: Path, make, max_epochs: int, ckpt_path=None, checkpoint_dir=None, **trainer_args) -> LanguageModel:
    """Seed 0, then `make()` -> (model, datamodule) and fit for `max_epochs`, from `ckpt_path` if given,
    keeping last.ckpt in `checkpoint_dir` if given."""
    L.seed_everything(0)
    model, datamodule = make()
    callbacks = [L.pytorch.callbacks.ModelCheckpoint(dirpath=checkpoint_dir, save_last=True)] if checkpoint_dir else []
    trainer(tmp_path, max_epochs=max_epochs, enable_checkpointing=bool(callbacks), callbacks=callbacks,
            num_sanity_val_steps=0, **trainer_args).fit(model, datamodule, ckpt_path=ckpt_path)
    return model


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    """Stop after epoch 1 of 2, resume from last.ckpt: the same weights (bit for bit) and lr as never stopping."""
    def make():
        datamodule = char_data(tmp_path, bptt=20)
        return tiny_model(datamodule.vocab_size, optimizer="sgd", lr=0.5, lr_schedule="step", lr_decay=0.5), datamodule

    straight = fit_seeded(tmp_path, make, 2, limit_val_batches=2)
    fit_seeded(tmp_path, make, 1, checkpoint_dir=tmp_path / "ckpt", limit_val_batches=2)
    resumed = fit_seeded(tmp_path, make, 2, ckpt_path=tmp_path / "ckpt" / "last.ckpt", limit_val_batches=2)
    assert resumed.trainer.global_step == straight.trainer.global_step
    lr_after = [m.trainer.optimizers[0].param_groups[0]["lr"] for m in (straight, resumed)]
    assert lr_after[0] == lr_after[1] == pytest.approx(0.5 * 0.5**2)  # step decay restored too
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_bf16_mixed_precision_trains(tmp_path):
    datamodule = char_data(tmp_path)
    model = tiny_model(datamodule.vocab_size)
    fit = trainer(tmp_path, limit_train_batches=3, precision="bf16-mixed", gradient_clip_val=0.25, limit_val_batches=2)
    fit.fit(model, datamodule)
    assert torch.isfinite(fit.callback_metrics["val_ppl"])
