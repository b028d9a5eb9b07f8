"""Image captioning: the shapes generator (deterministic, captions true to the pixels, held-out
pairs absent from training), CaptionFolder on a tiny image folder and its errors, decoding
through the shared seq2seq functions, a tiny fit that learns, the checkpoint round trip with the
vocabulary inside, the ``caption`` command, exact resume, and the recipe through ``fit``/``test``."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from lightning_rnn import cli
from lightning_rnn.caption import (CaptionFolder, CaptionNet, Captioner, ImageError, ShapesCaptions, read_image,
                                   save_image, shapes)
from lightning_rnn.data.pair_vocab import UNK
from lightning_rnn.seq2seq.decoding import beam_search, greedy_decode

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "captions_shapes.yaml"
TINY_NET = dict(channels=(8, 16), feature_size=32, grid=3, embed_dim=16, hidden_size=32, attention="additive",
                backend="torch")


# -- the shapes generator -------------------------------------------------------------------------

def test_the_generator_is_deterministic_and_seeded():
    images, captions, scenes = shapes.generate("train", 20, seed=3)
    again, captions_again, scenes_again = shapes.generate("train", 20, seed=3)
    assert torch.equal(images, again) and captions == captions_again and scenes == scenes_again
    assert images.shape == (20, 3, 64, 64) and images.dtype == torch.uint8
    other, other_captions, _ = shapes.generate("train", 20, seed=4)
    assert not torch.equal(images, other) and captions != other_captions
    val, _, _ = shapes.generate("val", 20, seed=3)
    assert not torch.equal(images, val)  # each split draws its own images


def objects_in_pixels(image: torch.Tensor) -> dict[tuple[int, int], tuple[str, str]]:
    """Read a generated image back, cell by cell: ``{(row, col): (colour, shape)}`` from the pixels
    alone. Colour: the palette entry nearest the bright pixels' mean. Shape: how much of its
    bounding box the object fills (square 1, circle pi/4, triangle 1/2)."""
    found = {}
    size = image.shape[-1]
    edges = [round(i * size / 3) for i in range(4)]
    palette = torch.tensor(list(shapes.COLOURS.values()), dtype=torch.float32)
    for row in range(3):
        for col in range(3):
            cell = image[:, edges[row]:edges[row + 1], edges[col]:edges[col + 1]].float()
            bright = cell.amax(0) > 120  # the background stays below 50
            if not bright.any():
                continue
            mean = cell[:, bright].mean(1)
            colour = list(shapes.COLOURS)[int((palette - mean).norm(dim=1).argmin())]
            ys, xs = bright.nonzero(as_tuple=True)
            fill = bright.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
            shape = "square" if fill > 0.92 else "circle" if fill > 0.65 else "triangle"
            found[(row, col)] = (colour, shape)
    return found


def caption_from_pixels(image: torch.Tensor) -> str:
    objects = objects_in_pixels(image)
    cells = sorted(objects)  # reading order: top to bottom, left to right
    names = [f"a {objects[c][0]} {objects[c][1]}" for c in cells]
    if len({r for r, _ in cells}) == 1:
        return " left of ".join(names)
    assert len({c for _, c in cells}) == 1, f"objects neither in one row nor in one column: {cells}"
    return " above ".join(names)


@pytest.mark.parametrize("split", shapes.SPLITS)
def test_the_captions_describe_the_pixels(split):
    images, captions, scenes = shapes.generate(split, 60, seed=1)
    counts = set()
    for image, references, scene in zip(images, captions, scenes):
        assert caption_from_pixels(image) == references[0], references
        counts.add(len(scene.objects))
        for o in scene.objects:  # the named colour is at each object's centre
            centre = image[:, round(o.y), round(o.x)].float()
            assert (centre - torch.tensor(shapes.COLOURS[o.colour]).float()).abs().max() <= 20
        if len(references) == 2:  # the second reference reads the same objects from the other end
            forward, backward = ("left of", "right of") if scene.axis == "horizontal" else ("above", "below")
            first, second = references[0].split(f" {forward} "), references[1].split(f" {backward} ")
            assert first == second[::-1] and len(first) == len(scene.objects)
            coordinate = [o.x if scene.axis == "horizontal" else o.y for o in scene.objects]
            assert coordinate == sorted(coordinate)
    assert counts == {1, 2, 3}


def test_held_out_pairs_never_appear_together_in_training():
    dm = ShapesCaptions(train_size=400, val_size=150, test_size=150, heldout_pairs=6, seed=5)
    dm.setup("fit")
    dealt = shapes.deal_pairs(5, 6)
    assert len(dealt["val"]) == len(dealt["test"]) == 6 and len(dealt["train"]) == 66 - 12
    assert not dealt["val"] & dealt["test"] and not (dealt["val"] | dealt["test"]) & dealt["train"]
    objects = {split: [[(o.colour, o.shape) for o in s.objects] for s in dm.scenes[split]] for split in shapes.SPLITS}
    held_out = dealt["val"] | dealt["test"]
    for scene in objects["train"]:
        assert not shapes.pairs_of(scene) & held_out, scene
    assert {o for scene in objects["train"] for o in scene} == set(shapes.OBJECTS)  # every object is seen
    for split, other in (("val", "test"), ("test", "val")):
        multi = [s for s in objects[split] if len(s) > 1]
        assert len(multi) > 50
        for scene in multi:
            assert shapes.pairs_of(scene) & dealt[split] and not shapes.pairs_of(scene) & dealt[other], scene
    # so no training caption names a held-out pair side by side, while test captions do
    captions = {split: [c for refs in dm.datasets[split].references for c in refs] for split in shapes.SPLITS}

    def phrases(pairs):
        for pair in pairs:
            a, b = (f"{colour} {shape}" for colour, shape in pair)
            for first, second in ((a, b), (b, a)):
                yield from (f"{first} {relation} a {second}" for relation in ("left of", "right of", "above", "below"))

    assert not any(p in c for p in phrases(held_out) for c in captions["train"])
    assert any(p in c for p in phrases(dealt["test"]) for c in captions["test"])


def test_shapes_datamodule_batches_and_arguments():
    dm = ShapesCaptions(train_size=30, val_size=10, test_size=10, batch_size=8, eval_batch_size=4, image_size=48)
    assert dm.vocab_size == 4 + len(shapes.WORDS) and dm.max_caption_len == 13  # known before any data is made
    dm.setup("fit")
    multi = sum(len(refs) for refs in dm.datasets["train"].references)
    assert len(dm.datasets["train"]) == multi and len(dm.datasets["val"]) == 10  # train: one item per caption
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape == (8, 3, 48, 48) and batch.images.dtype == torch.float32
    assert 0 <= float(batch.images.min()) and float(batch.images.max()) <= 1
    decoded = [dm.vocab.decode(row) for row in batch.captions.tolist()]
    assert all(d in refs for d, refs in zip(decoded, batch.references))
    val = next(iter(dm.val_dataloader()))
    assert [dm.vocab.decode(r) for r in val.captions.tolist()] == [refs[0] for refs in val.references]
    for kwargs, message in [({"batch_size": 0}, "batch_size must be"), ({"max_objects": 4}, "max_objects must be"),
                            ({"heldout_pairs": 40}, "heldout_pairs must be"), ({"image_size": 4}, "image_size must be"),
                            ({"train_size": -1}, "train_size must be")]:
        with pytest.raises(ValueError, match=message):
            ShapesCaptions(**kwargs)


# -- CaptionFolder ---------------------------------------------------------------------------------

def write_folder(tmp_path: Path, **changes) -> tuple[Path, Path]:
    """A Karpathy-style data set: 5 PNGs (one in a sub-folder, one not square) and its JSON."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (split, sentences) in enumerate([
        ("train", [["A", "dog", "runs"], ["a", "dog", "is", "running"]]),
        ("restval", [["a", "cat", "sits"]]),
        ("train", [["a", "dog", "sits"], ["the", "dog", "sits"]]),
        ("val", [["a", "cat", "runs"], ["a", "zebra", "runs"]]),
        ("test", [["a", "dog"]]),
    ]):
        name = f"img{i}.png"
        filepath = "sub" if i == 2 else ""
        pixels = torch.full((3, 20, 30 if i == 1 else 20), 40 * i, dtype=torch.uint8)
        save_image(pixels, images / filepath / name)
        entry = {"filename": name, "split": split, "sentences": [{"tokens": t, "raw": " ".join(t)} for t in sentences]}
        if filepath:
            entry["filepath"] = filepath
        entries.append(entry)
    for index, entry in changes.items():
        entries[int(index.removeprefix("entry"))] = entry
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"images": entries, "dataset": "tiny"}))
    return images, captions


def test_caption_folder_reads_the_karpathy_json_and_resizes_the_images(tmp_path):
    images, captions = write_folder(tmp_path)
    dm = CaptionFolder(str(images), str(captions), image_size=16, min_word_count=2, batch_size=2, eval_batch_size=2)
    # training words seen twice or more: a (4), dog (4), sits (3); the rest become <unk>
    assert dm.vocab.tokens[4:] == ["a", "dog", "sits"] and dm.vocab_size == 7
    assert dm.max_caption_len == 4
    dm.setup("fit")
    train = dm.datasets["train"]
    assert len(train) == 5 and train.references[1] == ["a cat sits"]  # restval trains; one item per sentence
    assert train.references[0] == ["a dog runs", "a dog is running"]  # lower-cased tokens
    image, ids, _ = train[2]  # items: image 0 twice (two sentences), then image 1
    assert image.shape == (3, 16, 16)  # 30x20 resized
    assert ids.tolist()[1:4] == [4, UNK, 6]  # a <unk> sits
    torch.testing.assert_close(train[3][0], torch.full((3, 16, 16), 80 / 255))  # the sub-folder's image
    val = next(iter(dm.val_dataloader()))
    assert val.references == [["a cat runs", "a zebra runs"]] and val.images.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="min_word_count must be"):
        CaptionFolder(str(images), str(captions), min_word_count=0)


def test_caption_folder_errors_name_the_file_and_the_entry(tmp_path):
    images, captions = write_folder(tmp_path, entry1={"filename": "img1.png", "sentences": [{"tokens": ["a"]}]})
    with pytest.raises(ValueError, match=r"captions.json: entry 1: has no 'split' field"):
        CaptionFolder(str(images), str(captions))
    no_tokens = {"filename": "img3.png", "split": "val", "sentences": [{"raw": "x"}]}
    images, captions = write_folder(tmp_path, entry3=no_tokens)
    with pytest.raises(ValueError, match=r"captions.json: entry 3: sentence 0 has no 'tokens'"):
        CaptionFolder(str(images), str(captions))

    images, captions = write_folder(tmp_path)
    (images / "img3.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    dm = CaptionFolder(str(images), str(captions), image_size=16, min_word_count=1)
    dm.setup("fit")
    with pytest.raises(ImageError, match=r"img3.png \(entry 3 of .*captions.json\): cannot read the image"):
        next(iter(dm.val_dataloader()))
    (images / "img4.png").unlink()
    with pytest.raises(ImageError, match=r"img4.png: no such image file \(entry 4 of"):
        CaptionFolder(str(images), str(captions)).setup("fit")


# -- decoding through the seq2seq functions -------------------------------------------------------

def test_greedy_and_beam_decoding_run_through_the_shared_seq2seq_functions():
    torch.manual_seed(0)
    net = CaptionNet(vocab_size=12, **TINY_NET).eval()
    images = torch.rand(5, 3, 32, 32)
    greedy, greedy_score = greedy_decode(net, images, max_len=9)
    beam1, beam1_score = beam_search(net, images, max_len=9, beam_size=1, length_penalty=0.0)
    assert torch.equal(greedy, beam1) and torch.allclose(greedy_score, beam1_score)
    beam4, beam4_score = beam_search(net, images, max_len=9, beam_size=4, length_penalty=0.0)
    assert bool((beam4_score >= greedy_score - 1e-5).all())
    # each row decodes as it would alone: the batch does not mix images
    alone, _ = greedy_decode(net, images[2:3], max_len=9)
    assert torch.equal(alone[0, :alone.shape[1]], greedy[2, :alone.shape[1]])
    for bad in (torch.rand(3, 32, 32), torch.rand(2, 1, 32, 32), torch.zeros(0, 3, 32, 32)):
        with pytest.raises(ValueError, match=r"images must be \[B, 3, H, W\]"):
            greedy_decode(net, bad, max_len=9)


def test_bad_model_arguments_are_rejected():
    for kwargs, message in [({"cell": "lstmx"}, "cell must be one of"), ({"hidden_size": 0}, "hidden_size must be"),
                            ({"encoder": "vgg"}, "encoder must be 'small' or 'resnet18'"),
                            ({"beam_size": 0}, "beam_size must be"), ({"lr_schedule": "step"}, "lr_schedule must be"),
                            ({"dropout": 1.0}, "dropout must be in")]:
        with pytest.raises(ValueError, match=message):
            Captioner(10, **{**TINY_NET, **kwargs})
    try:
        import torchvision  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(ValueError, match="encoder 'resnet18' needs torchvision"):
            Captioner(10, encoder="resnet18")


# -- training, checkpoints, the caption command ---------------------------------------------------

def small_shapes(**kwargs) -> ShapesCaptions:
    options = dict(train_size=320, val_size=40, test_size=40, max_objects=1, image_size=32, batch_size=32,
                   eval_batch_size=40)
    return ShapesCaptions(**{**options, **kwargs})


def trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    return L.Trainer(**{"max_epochs": 1, "accelerator": "cpu", "logger": False, "enable_checkpointing": False,
                        "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": tmp_path,
                        **kwargs})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Captioner, Path, ShapesCaptions, dict]:
    """A tiny captioner fitted on one-object 32x32 images, its checkpoint, data and test scores."""
    folder = tmp_path_factory.mktemp("caption")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one_torch_thread does, which a module-scoped fixture cannot use
    L.seed_everything(0)
    data = small_shapes()
    model = Captioner(data.vocab_size, lr=0.01, **TINY_NET)
    fit = trainer(folder, max_epochs=10, num_sanity_val_steps=0, limit_val_batches=0)
    fit.fit(model, data)
    scores = fit.test(model, data, verbose=False)[0]
    fit.save_checkpoint(folder / "tiny.ckpt")
    torch.set_num_threads(threads)
    return model, folder / "tiny.ckpt", data, scores


def test_a_tiny_fit_learns_to_caption(trained):
    model, _, data, scores = trained
    # chance is ln(17) = 2.8 nats per word; without the image the best is 0.62 (colour and shape unknown)
    assert scores["test_loss"] < 0.3, scores
    test = data.datasets["test"]
    captions = model.caption(torch.stack([test[i][0] for i in range(len(test))]))
    right = sum(c in refs for c, refs in zip(captions, test.references))
    assert right >= 0.5 * len(test), list(zip(captions, test.references))  # 27 of 40; guessing: 1 in 12
    assert scores["test_bleu"] == 0.0  # one-object captions have no 4-grams: BLEU-4 is 0 whatever the model says


def test_the_checkpoint_holds_the_vocabulary_and_captions_the_same(trained, tmp_path):
    model, path, data, _ = trained
    loaded = Captioner.load_from_checkpoint(path, map_location="cpu")
    assert loaded.vocab.tokens == data.vocab.tokens and loaded.image_size == 32 and loaded.max_caption_len == 3
    images = torch.stack([data.datasets["test"][i][0] for i in range(8)])
    assert loaded.caption(images) == model.caption(images) == loaded.caption(images, beam_size=1)
    assert len(loaded.caption(images, beam_size=3)) == 8
    assert loaded.caption(images[0]) == loaded.caption(images[:1])
    with pytest.raises(ValueError, match="has no vocabulary"):
        Captioner(data.vocab_size, **TINY_NET).caption(images)


def test_the_caption_command_prints_one_caption_per_image(trained, tmp_path, capsys):
    model, path, data, _ = trained
    files = []
    for i in range(2):
        files.append(tmp_path / f"test{i}.png")
        save_image(data.datasets["test"][i][0], files[-1])
    expected = model.caption(torch.stack([read_image(f, 32) for f in files]))
    assert cli.main(["caption", "--ckpt", str(path), "--image", str(files[0]), "--image", str(files[1])]) == 0
    assert capsys.readouterr().out.splitlines() == expected
    assert cli.main(["caption", "--ckpt", str(path), "--image", str(files[0]), "--beam_size", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1

    missing = tmp_path / "missing.ckpt"
    assert cli.main(["caption", "--ckpt", str(missing), "--image", str(files[0])]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(missing) in lines[0] and "no such checkpoint file" in lines[0]

    broken = tmp_path / "broken.png"
    broken.write_text("not a picture")
    assert cli.main(["caption", "--ckpt", str(path), "--image", str(broken), "--image", str(files[1])]) == 1
    out = capsys.readouterr()
    errors = [line for line in out.err.splitlines() if line.strip()]
    assert len(errors) == 1 and str(broken) in errors[0] and "cannot read the image" in errors[0]
    assert out.out.splitlines() == ["", expected[1]]  # the good image is still captioned, in its place


def test_a_shapes_run_stopped_mid_epoch_resumes_bit_exactly(tmp_path):
    from tests.test_resume import Stop, StopAt, assert_same_weights, fit

    def setup(_):
        data = small_shapes(train_size=30, val_size=4, test_size=4, image_size=16, batch_size=6, eval_batch_size=4)
        model = Captioner(data.vocab_size, channels=(4,), feature_size=8, embed_dim=8, hidden_size=8, dropout=0.3,
                          lr=0.01, backend="torch")
        return model, data

    straight, run = fit(setup, tmp_path / "straight")
    steps_per_epoch = run.num_training_batches
    assert steps_per_epoch > 2
    with pytest.raises(Stop):
        fit(setup, tmp_path / "stopped", [StopAt(steps_per_epoch + 2, inside=False)])
    resumed, run = fit(setup, tmp_path / "resumed", ckpt_path=tmp_path / "stopped" / "ckpt" / "interrupted.ckpt")
    assert run.global_step == 2 * steps_per_epoch
    assert_same_weights(straight, resumed)


# -- the recipe ------------------------------------------------------------------------------------

def test_the_recipe_fits_one_step_then_tests_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = ["--data.init_args.train_size", "16", "--data.init_args.val_size", "8", "--data.init_args.test_size", "8",
            "--data.init_args.image_size", "32", "--model.init_args.channels", "[4, 8]",
            "--model.init_args.hidden_size", "8", "--model.init_args.backend", "torch",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    fit = cli.build_cli(["fit", "--config", str(RECIPE), *tiny, "--trainer.max_epochs", "1",
                         "--trainer.limit_train_batches", "1"])
    recipe = yaml.safe_load(RECIPE.read_text())
    hparams = fit.model.hparams
    assert hparams.vocab_size == fit.datamodule.vocab_size == 4 + len(shapes.WORDS)
    assert "input_size" not in hparams and "num_classes" not in hparams
    for key, value in recipe["model"]["init_args"].items():
        expected = {"channels": [4, 8], "hidden_size": 8, "backend": "torch"}.get(key, value)
        assert (list(hparams[key]) if key == "channels" else hparams[key]) == expected, key
    assert fit.trainer.global_step == 1
    best = tmp_path / "runs" / "captions_shapes" / "version_0" / "checkpoints" / "best.ckpt"
    assert best.is_file() and "val_bleu" in (best.parent.parent / "metrics.csv").read_text()

    test = cli.build_cli(["test", "--config", str(RECIPE), *tiny, "--ckpt_path", str(best)])
    assert {"test_bleu", "test_loss"} <= test.trainer.callback_metrics.keys()
