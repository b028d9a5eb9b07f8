"""Every language-model recipe parses, instantiates what it says, and runs one tiny step."""

from pathlib import Path

import pytest
import yaml

from lightning_rnn import cli
from lightning_rnn.data.text import default_data_root


pytestmark = pytest.mark.usefixtures("one_torch_thread")


RECIPES = Path(__file__).resolve().parents[1] / "recipes"
LM_RECIPES = ["char_lm", "ptb_small", "ptb_medium", "ptb_large", "wikitext2_medium", "shakespeare_char", "ptb_awd", "ptb_awd_small"]
DATA_FOLDER = {"ptb": "ptb", "wikitext2": "wikitext-2", "shakespeare": "tiny-shakespeare"}  # recipe prefix -> folder
TINY = {"embedding_size": 16, "hidden_size": 16}


@pytest.mark.parametrize("name", LM_RECIPES)
def test_recipe_instantiates_and_runs_a_tiny_step(name, tmp_path, monkeypatch):
    folder = next((f for prefix, f in DATA_FOLDER.items() if name.startswith(prefix)), None)
    if folder and not (default_data_root() / folder).is_dir():
        pytest.skip(f"{name} needs {default_data_root() / folder} (see its SOURCE.md / the recipe header)")
    recipe = RECIPES / f"{name}.yaml"
    expected = yaml.safe_load(recipe.read_text())["model"]["init_args"]
    monkeypatch.chdir(tmp_path)  # runs/ lands in tmp_path
    overrides = [f"--model.init_args.{key}={value}" for key, value in TINY.items()]
    overrides += ["--model.init_args.backend=torch", "--data.init_args.batch_size=2", "--data.init_args.bptt=5",
                  "--data.init_args.eval_batch_size=2", "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false"]
    run = cli.build_cli(["fit", "--config", str(recipe), *overrides])

    hparams = run.model.hparams
    assert hparams.vocab_size == run.datamodule.vocab_size
    for key, value in expected.items():
        assert hparams[key] == TINY.get(key, value), key
    assert run.trainer.global_step == 1
