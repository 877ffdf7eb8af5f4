"""Weighted L2 loss (paper Sec. 4) on hand-made examples."""
import pytest
import torch

from dnnod.loss import DEFAULT_LAMBDA, mask_loss


def test_hand_made_example():
    pred = torch.tensor([[0.5, 0.0, 1.0, 0.2]])
    target = torch.tensor([[1.0, 0.0, 0.0, 0.5]])
    lam = 0.1
    # (1+.1)(.5)^2 + 0 + (0+.1)(1)^2 + (.5+.1)(.3)^2 = .275 + .1 + .054
    assert mask_loss(pred, target, lam).item() == pytest.approx(0.275 + 0.1 + 0.054)


def test_matrix_form_and_batch_mean():
    torch.manual_seed(0)
    pred, target = torch.rand(3, 2, 5, 4, 4, dtype=torch.float64), torch.rand(3, 2, 5, 4, 4, dtype=torch.float64)
    lam = 0.3
    per_sample = []
    for p, m in zip(pred.reshape(3, -1), target.reshape(3, -1)):
        w = torch.diag(m + lam).sqrt()                  # (Diag(m) + λI)^{1/2}
        per_sample.append(torch.linalg.vector_norm(w @ (p - m)) ** 2)
    assert mask_loss(pred, target, lam).item() == pytest.approx(torch.stack(per_sample).mean().item())


def test_gradient_is_2_m_plus_lambda_p_minus_m():
    torch.manual_seed(1)
    pred = torch.rand(1, 5, 6, 6, dtype=torch.float64, requires_grad=True)
    target = torch.rand(1, 5, 6, 6, dtype=torch.float64)
    lam = 0.05
    mask_loss(pred, target, lam).backward()
    assert torch.allclose(pred.grad, 2 * (target + lam) * (pred.detach() - target))


def test_zero_loss_at_target_and_default_lambda():
    t = torch.rand(2, 5, 3, 3)
    assert mask_loss(t, t).item() == 0
    assert DEFAULT_LAMBDA > 0
    # all-zero prediction: only covered cells cost, with weight 1 + λ
    t = torch.zeros(1, 4); t[0, 0] = 1
    assert mask_loss(torch.zeros(1, 4), t).item() == pytest.approx(1 + DEFAULT_LAMBDA)


@pytest.mark.parametrize("a,b,lam,msg", [
    (torch.zeros(2, 3), torch.zeros(2, 4), 0.1, "same shape"),
    (torch.zeros(0, 3), torch.zeros(0, 3), 0.1, "non-empty"),
    (torch.zeros(2, 3), torch.zeros(2, 3), -1.0, "lambda"),
    (torch.zeros(2, 3), torch.zeros(2, 3), float("nan"), "lambda"),
])
def test_bad_input(a, b, lam, msg):
    with pytest.raises(ValueError, match=msg):
        mask_loss(a, b, lam)
