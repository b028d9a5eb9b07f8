"""``LanguageModel``: embedding -> stacked recurrent layers -> linear decoder.

Training uses truncated backpropagation through time (TBPTT) across batches:
the DataModule delivers windows of B parallel text streams in order
(``lightning_rnn.data.StreamWindows``), and the module carries each split's
hidden state from one batch to the next, detached from the graph so gradients
stop at the window boundary. The states are reset at the start of every epoch
and kept apart for train, validation and test. Because each batch is still one
ordinary optimization step, Lightning's automatic optimization keeps working:
``gradient_clip_val``, ``accumulate_grad_batches``, lr schedulers and mixed
precision are all the Trainer's usual options.

AWD-LSTM's regularisers (Merity et al. 2017) are options: ``locked_dropout`` (one mask per
sequence on the embedding output, between layers and on the output: AWD's dropouti, dropouth,
dropout), ``word_dropout`` (whole words, AWD's dropoute), ``weight_drop`` (on each layer's W_hh,
AWD's wdrop), activation regularisation ``ar_alpha`` / ``tar_beta``, ``tie_last_layer`` (the last
layer as wide as the embedding, so a wide network can still be tied), and NT-ASGD (``nt_asgd``:
``lightning_rnn.lm.asgd``). With ``variable_bptt`` on the DataModule, each step's learning rate is
scaled by its window length over the mean, as AWD-LSTM does.

A checkpoint written mid-epoch also holds the carried training state, as it was after the last
finished step, so a resumed run continues the same streams with the same state (the DataModule
skips the windows already used: ``lightning_rnn.data.resumable``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torchmetrics import MeanMetric

from lightning_rnn.data.resumable import finished_batches
from lightning_rnn.data.vocabulary import EOS, Vocabulary
from lightning_rnn.lm.asgd import ParameterAverage, stalled
from lightning_rnn.lm.optim import OptimizerName, ScheduleName, build_optimizer, build_schedule
from lightning_rnn.lm.sampling import next_token
from lightning_rnn.nn import GRU, LSTM, RNN, embedding_dropout, locked_dropout

Cell = Literal["lstm", "gru", "rnn"]
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | list  # a list: one state per layer (per-layer stack)
SPLITS = ("train", "val", "test")
VOCAB_KEY = "lightning_rnn_vocabulary"  # where the vocabulary lives inside a checkpoint
CARRIED_KEY = "lightning_rnn_carried_state"  # the training state carried across windows, mid-epoch
ASGD_KEY = "lightning_rnn_nt_asgd"  # NT-ASGD: validation history, and the live weights once averaging


def _map_state(state, fn):
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return type(state)(_map_state(s, fn) for s in state)
    return fn(state)


def detach_state(state: State | None) -> State | None:
    """Cut the autograd graph at the window boundary (the TBPTT truncation)."""
    return _map_state(state, lambda s: s.detach())


def state_to(state: State | None, device: torch.device) -> State | None:
    return _map_state(state, lambda s: s.to(device))


def _first_tensor(state: State) -> torch.Tensor:
    while isinstance(state, (tuple, list)):
        state = state[0]
    return state


def _check_rate(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


class LanguageModel(LightningModule):
    """Word- or character-level recurrent language model.

    Args:
        vocab_size: number of tokens (the CLI fills it in from the DataModule).
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (tanh).
        embedding_size, hidden_size, num_layers: layer sizes.
        dropout: rate on the embedding output, between recurrent layers and on the
            last layer's output (Zaremba et al.); ``embedding_dropout`` and
            ``output_dropout`` override the first and last when given.
        tie_weights: the decoder reuses the embedding matrix (one shared parameter).
            Needs ``embedding_size`` equal to the decoder input size, which is
            ``proj_size`` if set (LSTM only) else ``hidden_size``.
        proj_size: LSTM projection size (0: none).
        init_range: embedding and decoder weights start uniform in ``[-init_range, init_range]``.
        optimizer, lr, weight_decay, lr_schedule, lr_decay, decay_start_epoch: see
            ``lightning_rnn.lm.optim``.
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` for the recurrent layers.
        locked_dropout: the embedding, between-layer and output dropouts use one mask per sequence
            (``lightning_rnn.nn.LockedDropout``), and each recurrent layer is its own module
            (``layers``) so the between-layer one is locked too (AWD-LSTM).
        layer_dropout: rate between recurrent layers (AWD's dropouth); default ``dropout``.
        word_dropout: drops whole words from the embedding matrix (AWD's dropoute).
        weight_drop, recurrent_dropout, zoneout: passed to every recurrent layer
            (``lightning_rnn.nn.regularize``; AWD's wdrop is ``weight_drop``).
        tie_last_layer: the last recurrent layer's hidden size is ``embedding_size`` (AWD-LSTM),
            so ``tie_weights`` works with any ``hidden_size``; implies one module per layer.
        ar_alpha, tar_beta: activation regularisation ``alpha * mean(dropped_output**2)`` and temporal
            activation regularisation ``beta * mean((h_t - h_{t-1})**2)`` on the last layer's output
            (before dropout), added to the training loss (not to the logged ``train_loss``).
        nt_asgd, nonmono: average the weights from when validation stalls (``lightning_rnn.lm.asgd``).

    Shapes: ``forward(tokens [B, T], state)`` returns ``logits [B, T, vocab_size]``
    and the final state (``h`` or ``(h, c)``, each ``[num_layers, B, *]``).
    """

    def __init__(
        self,
        vocab_size: int,
        cell: Cell = "lstm",
        embedding_size: int = 200,
        hidden_size: int = 200,
        num_layers: int = 2,
        dropout: float = 0.0,
        embedding_dropout: float | None = None,
        output_dropout: float | None = None,
        tie_weights: bool = False,
        proj_size: int = 0,
        init_range: float = 0.1,
        optimizer: OptimizerName = "sgd",
        lr: float = 1.0,
        weight_decay: float = 0.0,
        lr_schedule: ScheduleName = "none",
        lr_decay: float = 0.5,
        decay_start_epoch: int = 1,
        backend: Literal["auto", "triton", "torch"] = "auto",
        locked_dropout: bool = False,
        layer_dropout: float | None = None,
        word_dropout: float = 0.0,
        weight_drop: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        tie_last_layer: bool = False,
        ar_alpha: float = 0.0,
        tar_beta: float = 0.0,
        nt_asgd: bool = False,
        nonmono: int = 5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, value in (("vocab_size", vocab_size), ("embedding_size", embedding_size),
                            ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        layer_classes = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
        if cell not in layer_classes:
            raise ValueError(f"cell must be one of {sorted(layer_classes)}, got {cell!r}")
        if proj_size and cell != "lstm":
            raise ValueError(f"proj_size is only supported with cell='lstm', got cell={cell!r}")
        if proj_size and (tie_last_layer or locked_dropout):
            raise ValueError("proj_size is not supported with tie_last_layer or locked_dropout (one module per layer); "
                             "tie_last_layer sizes the last layer for tying instead")
        decoder_input = embedding_size if tie_last_layer else (proj_size or hidden_size)
        if tie_weights and decoder_input != embedding_size:
            raise ValueError(
                f"tie_weights=True needs embedding_size ({embedding_size}) to equal the decoder input size "
                f"({decoder_input}, the {'proj_size' if proj_size else 'hidden_size'}): set hidden_size="
                f"{embedding_size}" + (f", or proj_size={embedding_size} (cell='lstm')" if cell == "lstm" else "")
            )
        _check_rate("dropout", dropout)
        for name, value in (("ar_alpha", ar_alpha), ("tar_beta", tar_beta)):
            if not value >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if isinstance(nonmono, bool) or not isinstance(nonmono, int) or nonmono < 1:
            raise ValueError(f"nonmono must be a positive integer, got {nonmono!r}")
        self.word_dropout = _check_rate("word_dropout", word_dropout)
        layer_dropout = _check_rate("layer_dropout", dropout if layer_dropout is None else layer_dropout)

        self.embedding = nn.Embedding(vocab_size, embedding_size)
        input_rate = _check_rate("embedding_dropout", dropout if embedding_dropout is None else embedding_dropout)
        output_rate = _check_rate("output_dropout", dropout if output_dropout is None else output_dropout)
        extra = {"proj_size": proj_size} if cell == "lstm" else {}
        regularizers = {"weight_drop": weight_drop, "recurrent_dropout": recurrent_dropout, "zoneout": zoneout}
        self.rnn: nn.Module | None = None
        self.layers: nn.ModuleList | None = None
        if locked_dropout or tie_last_layer:  # AWD-LSTM: one module per layer, locked dropout between them
            sizes = [embedding_size] + [hidden_size] * (num_layers - 1) + [decoder_input if tie_last_layer else hidden_size]
            self.layers = nn.ModuleList(
                layer_classes[cell](sizes[k], sizes[k + 1], batch_first=True, backend=backend, **regularizers)
                for k in range(num_layers))
        else:
            self.rnn = layer_classes[cell](
                embedding_size, hidden_size, num_layers=num_layers, batch_first=True,
                dropout=layer_dropout if num_layers > 1 else 0.0, backend=backend, **extra, **regularizers,
            )
        self.input_rate, self.layer_rate, self.output_rate = input_rate, layer_dropout, output_rate
        self.embedding_dropout = nn.Dropout(input_rate)
        self.output_dropout = nn.Dropout(output_rate)
        self.decoder = nn.Linear(decoder_input, vocab_size)
        if tie_weights:
            self.decoder.weight = self.embedding.weight  # one Parameter, registered twice

        nn.init.uniform_(self.embedding.weight, -init_range, init_range)
        nn.init.zeros_(self.decoder.bias)
        if not tie_weights:
            nn.init.uniform_(self.decoder.weight, -init_range, init_range)

        self.vocab: Vocabulary | None = None  # set from the DataModule or a checkpoint
        self.nll = nn.ModuleDict({split: MeanMetric() for split in ("val", "test")})
        self._states: dict[str, State | None] = dict.fromkeys(SPLITS)
        # training windows of this epoch folded into _states["train"], and the state one window
        # before: a checkpoint written from inside a step needs the state before that step
        self._train_windows = 0
        self._train_state_before: State | None = None
        self._activation_penalty: torch.Tensor | float = 0.0  # AR/TAR of the current training step
        self._average = ParameterAverage()  # NT-ASGD
        self._val_history: list[float] = []
        self._lr_scale: float | None = None  # variable BPTT: this step's window length / bptt

    # -- the network -----------------------------------------------------------

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """``tokens [B, T]`` int64 -> ``(logits [B, T, V], final state)``."""
        logits, state, _, _ = self._network(tokens, state)
        return logits, state

    def _dropout(self, x: torch.Tensor, rate: float, module: nn.Dropout) -> torch.Tensor:
        if self.hparams.locked_dropout:
            return locked_dropout(x, rate, self.training)
        return module(x)

    def _network(self, tokens: torch.Tensor, state: State | None):
        """logits, final state, the last layer's output before and after dropout (for AR/TAR)."""
        embedded = embedding_dropout(self.embedding.weight, tokens, self.word_dropout, self.training)
        x = self._dropout(embedded, self.input_rate, self.embedding_dropout)
        if self.layers is None:
            assert self.rnn is not None
            output, state = self.rnn(x, state)
        else:
            finals = []
            for k, layer in enumerate(self.layers):
                if k > 0:
                    x = (locked_dropout if self.hparams.locked_dropout else F.dropout)(x, self.layer_rate, self.training)
                x, final = layer(x, None if state is None else state[k])
                finals.append(final)
            output, state = x, finals
        dropped = self._dropout(output, self.output_rate, self.output_dropout)
        return self.decoder(dropped), state, output, dropped

    def _step(self, split: str, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Run one window, continuing from (and then replacing) the split's carried state."""
        inputs, targets = batch
        previous = self._states[split]
        if previous is not None and _first_tensor(previous).device != inputs.device:
            previous = state_to(previous, inputs.device)  # restored from a checkpoint onto the CPU
        logits, state, output, dropped = self._network(inputs, previous)
        self._states[split] = detach_state(state)
        if split == "train":
            self._train_state_before, self._train_windows = previous, self._train_windows + 1
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        if split == "train":
            self._activation_penalty = self._ar_tar(output, dropped)
        return loss

    def _ar_tar(self, output: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor | float:
        """AR on the dropped last-layer output, TAR on its steps' differences before dropout."""
        penalty: torch.Tensor | float = 0.0
        if self.hparams.ar_alpha:
            penalty = penalty + self.hparams.ar_alpha * dropped.float().pow(2).mean()
        if self.hparams.tar_beta and output.shape[1] > 1:
            penalty = penalty + self.hparams.tar_beta * (output[:, 1:] - output[:, :-1]).float().pow(2).mean()
        return penalty

    # -- training and evaluation ------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self._states["train"] = None
        self._train_windows, self._train_state_before = 0, None

    # Metrics are reset at epoch start, not end: a reset re-creates their state tensors, and
    # tensors created under Trainer.validate's inference mode cannot be updated later by fit.
    def on_validation_epoch_start(self) -> None:
        self._states["val"] = None
        self.nll["val"].reset()
        if self._average.active:  # evaluate the averaged weights (NT-ASGD)
            self._average.swap(self)

    def on_test_epoch_start(self) -> None:
        self._states["test"] = None
        self.nll["test"].reset()
        if self._average.active:
            self._average.swap(self)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._step("train", batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss + self._activation_penalty

    # -- variable BPTT: the lr of a step scales with its window length (AWD-LSTM) --

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        variable = getattr(datamodule, "variable_bptt", False)
        self._lr_scale = batch[0].shape[1] / datamodule.bptt if variable else None

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """The step's lr times its window length / bptt (variable BPTT), for this one update only:
        restored right after it, before Lightning steps the lr schedulers."""
        if self._lr_scale is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        before = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * self._lr_scale
        try:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        finally:
            for group, lr in zip(optimizer.param_groups, before):
                group["lr"] = lr

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self._average.active:
            self._average.update(self)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.nll["val"].update(self._step("val", batch), weight=batch[1].numel())

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.nll["test"].update(self._step("test", batch), weight=batch[1].numel())

    def _log_perplexity(self, split: str) -> None:
        # token-weighted mean NLL over the whole split, summed across ranks by torchmetrics
        mean_nll = self.nll[split].compute()
        self.log(f"{split}_loss", mean_nll)
        self.log(f"{split}_ppl", mean_nll.exp(), prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self._log_perplexity("val")
        if self._average.active:
            self._average.swap(self)
        if self.hparams.nt_asgd and not self.trainer.sanity_checking and self.trainer.state.fn == TrainerFn.FITTING:
            value = float(self.nll["val"].compute())
            if not self._average.active and stalled(self._val_history, value, self.hparams.nonmono):
                self._average.start(self)
                print(f"NT-ASGD: validation stalled (loss {value:.4f}); averaging the weights from step {self.global_step}")
            self._val_history.append(value)
            self.log("averaging", float(self._average.active))

    def on_test_epoch_end(self) -> None:
        self._log_perplexity("test")
        if self._average.active:
            self._average.swap(self)

    def on_train_epoch_end(self) -> None:
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = build_optimizer(self.parameters(), hp.optimizer, hp.lr, hp.weight_decay)
        schedule = build_schedule(optimizer, hp.lr_schedule, hp.lr_decay, hp.decay_start_epoch, monitor="val_ppl")
        return optimizer if schedule is None else {"optimizer": optimizer, "lr_scheduler": schedule}

    # -- vocabulary: from the DataModule, into and out of checkpoints --------------

    def _adopt_vocabulary(self, vocab: Vocabulary, source: str) -> None:
        if len(vocab) != self.hparams.vocab_size:
            raise ValueError(
                f"the {source} vocabulary has {len(vocab)} tokens but the model was built with "
                f"vocab_size={self.hparams.vocab_size}"
            )
        if self.vocab is not None and vocab != self.vocab:
            first = next((i for i, (a, b) in enumerate(zip(vocab.itos, self.vocab.itos)) if a != b), None)
            if first is None:
                detail = f"levels differ: {vocab.level} vs {self.vocab.level}"
            else:
                detail = f"token id {first} is {vocab.itos[first]!r} there but {self.vocab.itos[first]!r} here"
            raise ValueError(
                f"the {source} vocabulary does not match the one this model uses ({detail}): "
                "a checkpoint only fits data with the vocabulary it was trained on"
            )
        self.vocab = vocab

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        vocab = getattr(datamodule, "vocab", None)
        if isinstance(vocab, Vocabulary):
            self._adopt_vocabulary(vocab, "DataModule's")

    def _state_keys_of_parameters(self) -> dict[str, str]:
        """state_dict key -> parameter name (a tied decoder weight is the embedding's parameter)."""
        names = {id(p): name for name, p in self.named_parameters()}
        return {key: names[id(v)] for key, v in self.state_dict(keep_vars=True).items() if id(v) in names}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.vocab is not None:
            checkpoint[VOCAB_KEY] = self.vocab.to_dict()
        if self.hparams.nt_asgd:
            saved = {"history": list(self._val_history), "live": None, "steps": self._average.steps}
            if self._average.active:  # the checkpoint's weights are the average; the live ones go here
                assert self._average.average is not None
                params = dict(self.named_parameters())
                saved["live"] = {name: p.detach().clone() for name, p in params.items()}
                for key, name in self._state_keys_of_parameters().items():
                    checkpoint["state_dict"][key] = self._average.average[name].clone()
            checkpoint[ASGD_KEY] = saved
        carried = self._carried_state_to_save()
        if carried is not None:
            checkpoint[CARRIED_KEY] = carried

    def _carried_state_to_save(self) -> dict | None:
        """The training state after the last finished step, when a checkpoint is written mid-epoch."""
        if self._trainer is None or self.trainer.state.fn != TrainerFn.FITTING:
            return None
        done = finished_batches(self.trainer)
        if done == 0:  # at an epoch boundary the state starts afresh anyway
            return None
        if self._train_windows == done:
            state = self._states["train"]
        elif self._train_windows == done + 1:  # written from inside a step: that step runs again
            state = self._train_state_before
        else:
            return None
        return {"windows": done, "state": state_to(state, torch.device("cpu"))}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if VOCAB_KEY in checkpoint:
            self._adopt_vocabulary(Vocabulary.from_dict(checkpoint[VOCAB_KEY]), "checkpoint's")
        asgd = checkpoint.get(ASGD_KEY)
        fitting = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        if asgd is not None and fitting:  # resuming: live weights back in the model, the average aside
            self._val_history = list(asgd["history"])
            if asgd["live"] is not None:
                keys = self._state_keys_of_parameters()
                average = {name: checkpoint["state_dict"][key].clone() for key, name in keys.items()}
                for key, name in keys.items():
                    checkpoint["state_dict"][key] = asgd["live"][name]
                self._average.load_state_dict({"average": average, "steps": asgd["steps"]})
        carried = checkpoint.get(CARRIED_KEY)
        if carried is not None:
            # a resumed mid-epoch run does not call on_train_epoch_start: this is its state
            self._states["train"], self._train_windows = carried["state"], carried["windows"]
            self._train_state_before = None

    # -- generation ---------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> str:
        """Continue ``prompt``; returns only the new text.

        The prompt is run through the network first, and sampling continues from
        its final hidden state. ``temperature=0`` is greedy decoding. Raises
        ``ValueError`` for a prompt with tokens outside the vocabulary.
        """
        if self.vocab is None:
            raise RuntimeError(
                "this model has no vocabulary: load it from a checkpoint written by lightning-rnn, "
                "or fit/validate it with a TextDataModule first"
            )
        if not prompt:
            raise ValueError("prompt must be a non-empty string")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
        ids = self.vocab.encode(prompt, strict=True)
        if self.vocab.level == "word" and not prompt.endswith("\n") and ids and ids[-1] == self.vocab.stoi.get(EOS):
            ids = ids[:-1]  # the tokenizer closes every line; an open prompt line should stay open
        if not ids:
            raise ValueError(f"prompt {prompt!r} contains no tokens")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        was_training = self.training
        self.eval()
        try:
            logits, state = self(torch.tensor([ids], device=self.device), None)
            new_ids: list[int] = []
            for _ in range(max_new_tokens):
                token = next_token(logits[:, -1], temperature, top_k, generator)
                new_ids.append(int(token))
                logits, state = self(token.view(1, 1), state)
        finally:
            self.train(was_training)
        return self.vocab.decode(new_ids)
