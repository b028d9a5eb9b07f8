"""AWD-LSTM's pieces: LockedDropout, embedding (word) dropout, the LanguageModel options (locked
dropouts, weight drop, tie_last_layer, AR/TAR, NT-ASGD) and variable BPTT windows."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_rnn.data.batchify import StreamWindows
from lightning_rnn.lm import LanguageModel
from lightning_rnn.lm.asgd import ParameterAverage, stalled
from lightning_rnn.nn import EmbeddingDropout, LockedDropout, embedding_dropout, locked_dropout
from tests.test_lm_model import char_data, fit_seeded, trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AWD = dict(embedding_size=8, hidden_size=12, num_layers=3, tie_weights=True, tie_last_layer=True, locked_dropout=True,
           dropout=0.4, embedding_dropout=0.3, layer_dropout=0.25, word_dropout=0.1, weight_drop=0.5,
           ar_alpha=2.0, tar_beta=1.0, backend="torch")


# -- LockedDropout and embedding dropout ------------------------------------------------------------

def test_locked_dropout_uses_one_mask_per_sequence_over_time():
    x = torch.ones(4, 9, 50)
    y = LockedDropout(0.5)(x)
    assert torch.equal(y, y[:, :1].expand_as(y))  # the same at every step
    assert set(y.unique().tolist()) <= {0.0, 2.0}  # kept entries scaled by 1 / (1 - p)
    assert 0.3 < (y[:, 0] == 0).float().mean() < 0.7
    time_major = locked_dropout(x.transpose(0, 1), 0.5, batch_first=False)
    assert torch.equal(time_major, time_major[:1].expand_as(time_major))
    module = LockedDropout(0.5).eval()
    assert torch.equal(module(x), x)


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    weight = torch.randn(20, 6, requires_grad=True)
    tokens = torch.randint(0, 20, (5, 30))
    out = embedding_dropout(weight, tokens, 0.5)
    dropped = (out == 0).all(-1)  # rows that are all zero
    for word in tokens.unique():
        assert dropped[tokens == word].all() or not dropped[tokens == word].any()  # every occurrence alike
    kept = ~dropped
    torch.testing.assert_close(out[kept], 2 * weight[tokens][kept])
    out.sum().backward()
    dropped_words = tokens[dropped].unique()
    assert (weight.grad[dropped_words] == 0).all()
    embedding = torch.nn.Embedding(20, 6)
    module = EmbeddingDropout(embedding, 0.5).eval()
    assert torch.equal(module(tokens), embedding(tokens))
    assert list(dict(module.named_parameters())) == ["embedding.weight"]


@pytest.mark.parametrize("cls, name", [(LockedDropout, "p"), (lambda p: EmbeddingDropout(torch.nn.Embedding(3, 2), p), "p")])
@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_dropout_modules_refuse_bad_rates(cls, name, p):
    with pytest.raises(ValueError, match=f"{name} must be"):
        cls(p)


# -- the LanguageModel options ---------------------------------------------------------------------------

def test_awd_language_model_layers_states_and_tied_last_layer():
    model = LanguageModel(30, **AWD)
    assert [layer.hidden_size for layer in model.layers] == [12, 12, 8]
    assert all(layer.weight_drop == 0.5 for layer in model.layers)
    assert model.decoder.weight is model.embedding.weight
    tokens = torch.randint(0, 30, (2, 7))
    logits, state = model(tokens)
    assert logits.shape == (2, 7, 30) and len(state) == 3
    logits2, _ = model(tokens, state)  # a carried state goes back in
    model.eval()
    torch.testing.assert_close(model(tokens)[0], model(tokens)[0], rtol=0, atol=0)  # no dropout in eval


def test_ar_and_tar_are_the_formulas_on_the_last_layer_output():
    model = LanguageModel(30, **AWD)
    tokens = torch.randint(0, 30, (2, 7))
    torch.manual_seed(1)
    loss = model._step("train", (tokens, tokens))
    torch.manual_seed(1)
    logits, _, output, dropped = model._network(tokens, None)
    expected = 2.0 * dropped.pow(2).mean() + 1.0 * (output[:, 1:] - output[:, :-1]).pow(2).mean()
    torch.testing.assert_close(model._activation_penalty, expected)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 30), tokens.reshape(-1)))


@pytest.mark.parametrize("kwargs, name", [
    ({"word_dropout": 1.0}, "word_dropout"), ({"layer_dropout": -0.5}, "layer_dropout"),
    ({"weight_drop": 1.2}, "weight_drop"), ({"ar_alpha": -1.0}, "ar_alpha"), ({"nonmono": 0}, "nonmono"),
    ({"proj_size": 4, "locked_dropout": True}, "proj_size"), ({"zoneout": 1.0}, "zoneout"),
])
def test_language_model_refuses_bad_options(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LanguageModel(30, embedding_size=8, hidden_size=8, **kwargs)


def test_defaults_build_the_model_as_before():
    model = LanguageModel(30, embedding_size=8, hidden_size=8)
    assert model.layers is None and model.rnn is not None and model.rnn.weight_drop == 0.0
    assert set(model.state_dict()) == {"embedding.weight", "decoder.weight", "decoder.bias"} | {
        f"rnn.{n}" for n, _ in model.rnn.named_parameters()}


# -- NT-ASGD -----------------------------------------------------------------------------------------

def test_nt_asgd_trigger_is_awds_rule():
    assert not stalled([5.0, 4.0, 3.0], 2.5, nonmono=2)
    assert not stalled([5.0, 4.0], 6.0, nonmono=2)  # not more than nonmono results yet
    assert stalled([5.0, 4.0, 3.0], 5.5, nonmono=2)  # worse than the best before the last two
    assert not stalled([5.0, 4.0, 3.0], 4.5, nonmono=2)


def test_parameter_average_is_the_mean_since_start_and_swaps_back():
    layer = torch.nn.Linear(3, 2)
    avg = ParameterAverage()
    seen = []
    avg.start(layer)
    seen.append(layer.weight.detach().clone())
    for _ in range(4):
        with torch.no_grad():
            layer.weight.add_(torch.randn_like(layer.weight))
        avg.update(layer)
        seen.append(layer.weight.detach().clone())
    live = layer.weight.detach().clone()
    avg.swap(layer)
    torch.testing.assert_close(layer.weight.detach(), torch.stack(seen).mean(0))
    avg.swap(layer)
    assert torch.equal(layer.weight.detach(), live)


def test_nt_asgd_switches_on_a_stall_and_evaluates_and_saves_the_average(tmp_path):
    data = char_data(tmp_path)
    model = LanguageModel(data.vocab_size, embedding_size=8, hidden_size=8, num_layers=1, optimizer="sgd", lr=50.0,
                          nt_asgd=True, nonmono=1, backend="torch")
    fit = trainer(tmp_path, max_epochs=6)
    fit.fit(model, datamodule=data)
    history = model._val_history
    assert len(history) == 6
    started = next((k for k in range(len(history)) if stalled(history[:k], history[k], 1)), None)
    assert model._average.active == (started is not None)
    if started is None:
        pytest.skip(f"validation never stalled with this seed: {history}")
    # the checkpoint holds the average; a model loaded from it for evaluation uses it
    path = tmp_path / "averaged.ckpt"
    fit.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    live = dict(model.named_parameters())
    for name, avg in model._average.average.items():
        torch.testing.assert_close(checkpoint["state_dict"][name], avg)
        torch.testing.assert_close(checkpoint["lightning_rnn_nt_asgd"]["live"][name], live[name].detach())
    loaded = LanguageModel.load_from_checkpoint(path)
    torch.testing.assert_close(loaded.embedding.weight, model._average.average["embedding.weight"])


# -- variable BPTT ----------------------------------------------------------------------------------

def test_variable_bptt_windows_cover_the_stream_with_the_fixed_count_and_depend_on_seed_and_epoch():
    tokens = torch.arange(20_001)
    epoch = [0]
    fixed = StreamWindows(tokens, 4, 35)
    windows = StreamWindows(tokens, 4, 35, variable_bptt=True, seed=3, epoch=lambda: epoch[0])
    batches = list(windows)
    assert len(batches) == len(fixed) == len(windows)
    assert torch.equal(torch.cat([x for x, _ in batches], 1), fixed.streams[:, :-1])  # contiguous, complete
    assert all(torch.equal(y[:, :-1], x[:, 1:]) for x, y in batches)
    lengths = [x.shape[1] for x, _ in batches]
    assert len(set(lengths)) > 5 and min(lengths) >= 4
    assert abs(sum(lengths) / len(lengths) - 35) < 2
    assert [x.shape[1] for x, _ in windows] == lengths  # the same epoch: the same cut
    epoch[0] = 1
    assert [x.shape[1] for x, _ in windows] != lengths
    windows.skip_once(3)  # a resumed epoch starts where the interrupted one would have gone on
    epoch[0] = 0
    assert [x.shape[1] for x, _ in windows] == lengths[3:]


def test_variable_bptt_scales_the_step_lr_by_window_length_and_keeps_the_schedule(tmp_path, monkeypatch):
    import lightning_rnn.lm.model as lm_model

    data = char_data(tmp_path, bptt=7)
    data.variable_bptt = True
    seen = []  # (window length, lr of the update, epoch) at each optimizer step

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure=None):
            loss = super().step(closure)
            seen.append((model._lr_scale * 7, self.param_groups[0]["lr"], model.current_epoch))
            return loss

    monkeypatch.setattr(lm_model, "build_optimizer", lambda params, name, lr, wd: RecordingSGD(params, lr=lr))
    model = LanguageModel(data.vocab_size, embedding_size=8, hidden_size=8, num_layers=1, optimizer="sgd", lr=1.0,
                          lr_schedule="step", lr_decay=0.5, decay_start_epoch=1, backend="torch")
    trainer(tmp_path, max_epochs=3).fit(model, datamodule=data)
    # each update: the schedule's lr (x0.5 per epoch) times length / bptt; the scaling never leaks into the schedule
    assert {epoch for _, _, epoch in seen} == {0, 1, 2} and len({length for length, _, _ in seen}) > 1
    for length, lr, epoch in seen:
        assert math.isclose(lr, 0.5 ** epoch * length / 7, rel_tol=1e-12), (length, lr, epoch)
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.5 ** 3)


def test_awd_model_trains_and_resumes_its_carried_per_layer_state(tmp_path):
    data = char_data(tmp_path)
    model = LanguageModel(data.vocab_size, **{**AWD, "nt_asgd": True, "nonmono": 1})
    trainer(tmp_path, max_epochs=2).fit(model, datamodule=data)
    state = model._states["train"]
    assert isinstance(state, list) and len(state) == 3 and not state[0][0].requires_grad


def test_weight_drop_and_recurrent_options_reach_the_single_module_stack():
    model = LanguageModel(30, embedding_size=8, hidden_size=8, weight_drop=0.4, recurrent_dropout=0.1, zoneout=0.2)
    assert model.layers is None
    assert (model.rnn.weight_drop, model.rnn.recurrent_dropout, model.rnn.zoneout) == (0.4, 0.1, (0.2, 0.2))
    logits, _ = model(torch.randint(0, 30, (2, 5)))
    assert logits.shape == (2, 5, 30)


def test_a_resumed_awd_run_with_nt_asgd_and_variable_bptt_matches_an_uninterrupted_one(tmp_path):
    """Stop after 2 of 3 epochs, resume from last.ckpt: the same live weights, average and history, bit for bit."""
    def make():
        data = char_data(tmp_path, bptt=9)
        data.variable_bptt = True
        model = LanguageModel(data.vocab_size, **{**AWD, "optimizer": "sgd", "lr": 40.0, "nt_asgd": True, "nonmono": 1})
        return model, data

    straight = fit_seeded(tmp_path, make, 3, val_check_interval=0.25)
    fit_seeded(tmp_path, make, 2, checkpoint_dir=tmp_path / "ckpt", val_check_interval=0.25)
    resumed = fit_seeded(tmp_path, make, 3, ckpt_path=tmp_path / "ckpt" / "last.ckpt", val_check_interval=0.25)
    assert resumed._val_history == straight._val_history
    assert resumed._average.active == straight._average.active
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    assert straight._average.active, f"averaging never started: {straight._val_history}"  # lr 40 stalls early (seed 0)
    assert resumed._average.steps == straight._average.steps
    for name, a in straight._average.average.items():
        assert torch.equal(a, resumed._average.average[name]), name
