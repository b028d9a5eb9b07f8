"""The issue-2 showcase: its task is what it says, and both backends train identically."""
import torch

from lightning_rnn.showcase import adding_problem, main, train


def test_adding_problem_targets_are_the_marked_sums():
    x, y = adding_problem(5, 8, torch.Generator().manual_seed(1))
    assert x.shape == (5, 8, 2) and y.shape == (5,)
    assert torch.equal(x[..., 1].sum(dim=1), torch.full((5,), 2.0))
    torch.testing.assert_close(y, (x[..., 0] * x[..., 1]).sum(dim=1))


def test_torch_and_triton_training_agree(poison_kernel_buffers):
    shape = dict(steps=3, hidden=5, length=4, batch=3, seed=7)
    torch_losses, _, ran_torch = train("torch", **shape)
    triton_losses, _, ran_triton = train("triton", **shape)
    assert (ran_torch, ran_triton) == ("torch", "triton")
    assert torch_losses[0] != torch_losses[-1]
    torch.testing.assert_close(torch.tensor(triton_losses), torch.tensor(torch_losses), rtol=1e-5, atol=1e-6)


def test_main_prints_both_losses(capsys):
    assert main(["--steps", "2", "--hidden", "4", "--length", "3", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "loss (torch)" in out and "loss (triton)" in out
