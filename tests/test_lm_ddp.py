"""Two CPU processes (ddp_spawn, gloo): each rank reads its own streams, and both report
the same validation perplexity (summed over ranks, not averaged per rank)."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_rnn.data import TextDataModule, batchify
from lightning_rnn.lm import LanguageModel
from tests.distributed import LeaveTogether


pytestmark = pytest.mark.usefixtures("one_torch_thread")


TEXT = "import os\nimport sys\n\ndef main():\n    return os.getcwd()\n" * 16


class RecordPerRank(L.Callback):
    """Each rank writes its first training batch and its validation perplexity to a file."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            torch.save(batch[0].cpu(), Path(self.folder, f"first_batch_rank{trainer.global_rank}.pt"))

    def on_validation_end(self, trainer, pl_module) -> None:
        path = Path(self.folder, f"val_ppl_rank{trainer.global_rank}.json")
        path.write_text(json.dumps(float(trainer.callback_metrics["val_ppl"])))


def test_two_process_ddp_trains_with_rank_contiguous_streams_and_one_perplexity(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text(TEXT)
    files = [str(tmp_path / f"{split}.txt") for split in ("train", "valid", "test")]
    datamodule = TextDataModule(*files, level="char", batch_size=2, bptt=8, eval_batch_size=3)
    model = LanguageModel(datamodule.vocab_size, embedding_size=8, hidden_size=8, num_layers=1,
                          optimizer="adam", lr=0.01, backend="torch")
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
        callbacks=[RecordPerRank(str(tmp_path)), LeaveTogether()],
    )
    trainer.fit(model, datamodule)

    perplexities = [json.loads((tmp_path / f"val_ppl_rank{r}.json").read_text()) for r in range(2)]
    assert perplexities[0] == perplexities[1]
    assert perplexities[0] < datamodule.vocab_size  # trained: better than uniform guessing

    streams = batchify(datamodule.tokens("train"), 2 * 2)  # world_size * batch_size streams
    for rank in range(2):
        first = torch.load(tmp_path / f"first_batch_rank{rank}.pt")
        assert torch.equal(first, streams[2 * rank : 2 * rank + 2, :8])
