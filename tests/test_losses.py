"""Distillation losses against hand-derived values (the convention is in losses.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from litdistill.losses import distillation_loss, kd_loss, regression_kd_loss, task_loss


def test_identical_logits_give_zero():
    """KL(p || p) = 0 for any p and any T."""
    z = torch.randn(5, 3)
    for t in (0.5, 1.0, 4.0):
        assert kd_loss(z, z.clone(), t).item() == pytest.approx(0.0, abs=1e-6)


def test_two_class_value_at_t1():
    """Teacher logits (ln 3, 0) give p_t = (3/4, 1/4); student (0, 0) gives (1/2, 1/2).

    KL = 3/4 ln(3/4 / 1/2) + 1/4 ln(1/4 / 1/2) = 3/4 ln 1.5 - 1/4 ln 2 = 0.130812...
    """
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(1.5) - 0.25 * math.log(2.0)
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_temperature_softens_and_scales_by_t_squared():
    """At T = 2 the teacher (ln 3, 0) becomes (sqrt 3, 1) / (sqrt 3 + 1); loss = 4 * KL."""
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert kd_loss(student, teacher, 2.0).item() == pytest.approx(4 * kl, rel=1e-6)


def test_batchmean_averages_examples():
    """Rows with KL a and 0 give (a + 0) / 2: the mean over examples, summed over classes."""
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    one = kd_loss(student[:1], teacher[:1], 1.0)
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(one.item() / 2, rel=1e-6)


def test_gradient_formula_and_t_squared_scale():
    """d(T^2 KL)/dz_s = T (p_s - p_t) / B exactly; for large T it tends to (z_s - z_t) / (C B).

    So with the T^2 factor the gradient keeps its scale as T grows (it would shrink like
    1/T^2 without it).
    """
    torch.manual_seed(0)
    teacher = torch.randn(4, 3)
    grads = {}
    for t in (1.0, 10.0, 20.0):
        student = torch.randn(4, 3, generator=torch.Generator().manual_seed(1),
                              requires_grad=True)
        kd_loss(student, teacher, t).backward()
        p_s = F.softmax(student.detach() / t, -1)
        p_t = F.softmax(teacher / t, -1)
        torch.testing.assert_close(student.grad, t * (p_s - p_t) / 4)
        grads[t] = student.grad.norm().item()
    assert grads[20.0] / grads[10.0] == pytest.approx(1.0, abs=0.02)


def test_teacher_gets_no_gradient():
    teacher = torch.randn(3, 4, requires_grad=True)
    student = torch.randn(3, 4, requires_grad=True)
    kd_loss(student, teacher, 2.0).backward()
    assert teacher.grad is None
    assert student.grad is not None


def test_alpha_kd_zero_is_plain_cross_entropy():
    student = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = distillation_loss(student, torch.randn(6, 3), labels, regression=False,
                            alpha_kd=0.0, alpha_task=1.0, temperature=3.0)
    assert out["loss"].item() == pytest.approx(F.cross_entropy(student, labels).item())


def test_total_is_weighted_sum():
    student, teacher = torch.randn(4, 2), torch.randn(4, 2)
    labels = torch.tensor([0, 1, 1, 0])
    out = distillation_loss(student, teacher, labels, regression=False, temperature=2.0,
                            alpha_kd=0.3, alpha_task=0.7)
    expected = 0.3 * kd_loss(student, teacher, 2.0) + 0.7 * task_loss(student, labels, False)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(out) == {"loss", "loss_kd", "loss_task"}


def test_regression_terms_are_mse():
    """Student (1, 2) vs teacher (0, 4): MSE = (1 + 4) / 2 = 2.5; labels (1, 1): (0 + 1)/2."""
    student = torch.tensor([[1.0], [2.0]])
    teacher = torch.tensor([[0.0], [4.0]])
    assert regression_kd_loss(student, teacher).item() == pytest.approx(2.5)
    assert task_loss(student, torch.tensor([1.0, 1.0]), True).item() == pytest.approx(0.5)
    out = distillation_loss(student, teacher, torch.tensor([1.0, 1.0]), regression=True,
                            alpha_kd=1.0, alpha_task=1.0)
    assert out["loss"].item() == pytest.approx(3.0)


def test_no_teacher_is_weighted_fine_tuning():
    logits, labels = torch.randn(2, 2), torch.tensor([0, 1])
    out = distillation_loss(logits, None, labels, regression=False, alpha_task=0.25)
    assert set(out) == {"loss", "loss_task"}
    assert out["loss"].item() == pytest.approx(0.25 * F.cross_entropy(logits, labels).item())


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        kd_loss(torch.zeros(1, 2), torch.zeros(1, 3), 1.0)


def test_transfer_rows_get_kd_but_no_task_term():
    """Rows 0-1 labelled, rows 2-3 transfer rows (their 'labels' are placeholders).

    Student logits 0 everywhere: CE of a labelled row = ln 2 whatever its label, so the task
    term is (ln 2 + ln 2) / 2 = ln 2: the mean over the 2 labelled rows, not (2 ln 2) / 4.
    Teacher (ln 3, 0) on every row: kd = T^2 KL = 0.130812 per row (T = 1), mean over all 4.
    Total = 0.5 * 0.130812 + 0.5 * ln 2.
    """
    student = torch.zeros(4, 2, requires_grad=True)
    teacher = torch.tensor([[math.log(3.0), 0.0]] * 4)
    labels = torch.tensor([1, 0, 1, 1])
    labelled = torch.tensor([True, True, False, False])
    out = distillation_loss(student, teacher, labels, regression=False, temperature=1.0,
                            alpha_kd=0.5, alpha_task=0.5, labelled=labelled)
    kl = 0.75 * math.log(1.5) - 0.25 * math.log(2.0)
    assert out["loss_task"].item() == pytest.approx(math.log(2.0), rel=1e-6)
    assert out["loss_kd"].item() == pytest.approx(kl, rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.5 * kl + 0.5 * math.log(2.0), rel=1e-6)
    # A transfer row's label never reaches the gradient: flipping it changes nothing.
    out["loss"].backward()
    grad = student.grad.clone()
    student.grad = None
    flipped = distillation_loss(student, teacher, torch.tensor([1, 0, 0, 0]), regression=False,
                                temperature=1.0, alpha_kd=0.5, alpha_task=0.5, labelled=labelled)
    flipped["loss"].backward()
    assert torch.equal(grad, student.grad)


def test_batch_of_transfer_rows_has_no_task_term():
    """No labelled row: the task term is exactly 0 (no gradient), the KD term unchanged;
    regression placeholders (NaN here) never leak into the loss."""
    student = torch.zeros(3, 1, requires_grad=True)
    teacher = torch.tensor([[1.0], [2.0], [3.0]])
    labels = torch.tensor([float("nan")] * 3)
    out = distillation_loss(student, teacher, labels, regression=True,
                            alpha_kd=1.0, alpha_task=1.0, labelled=torch.zeros(3, dtype=torch.bool))
    assert out["loss_task"].item() == 0.0
    assert out["loss_kd"].item() == pytest.approx((1 + 4 + 9) / 3)  # MSE to the teacher
    assert out["loss"].item() == pytest.approx(14 / 3)
    out["loss"].backward()
    assert torch.isfinite(student.grad).all()


def test_regression_task_term_is_the_mean_over_labelled_rows():
    """Predictions 0; labelled targets 1 and 3 -> (1 + 9) / 2 = 5; the transfer row's 10 is
    ignored (with it the mean would be 110 / 3)."""
    out = task_loss(torch.zeros(3, 1), torch.tensor([1.0, 3.0, 10.0]), True,
                    labelled=torch.tensor([1, 1, 0]))
    assert out.item() == pytest.approx(5.0)
