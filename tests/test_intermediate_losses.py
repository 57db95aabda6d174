"""Intermediate-layer terms against hand-derived values, and the layer mapping of the papers."""

import math

import pytest
import torch

from litdistill.losses import (
    attention_kl,
    attention_mse,
    cosine_hidden_loss,
    hidden_mse,
    layer_mapping,
    patient_loss,
    relation_kl,
)

MASK = torch.tensor([[1, 1, 0]])  # one example, two real tokens, one pad


def test_hidden_mse_value_and_masking():
    """Real tokens differ by (1, 0) and (0, 2): MSE = (1 + 0 + 0 + 4) / 4 = 1.25.

    The padded third token differs by 100 and must not count.
    """
    teacher = torch.zeros(1, 3, 2)
    student = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [100.0, 100.0]]])
    assert hidden_mse(student, teacher, MASK).item() == pytest.approx(1.25)
    assert hidden_mse(teacher, teacher, MASK).item() == 0.0


def test_hidden_mse_projection_gets_gradient_teacher_does_not():
    torch.manual_seed(0)
    proj = torch.nn.Linear(2, 4)
    student = torch.randn(1, 3, 2, requires_grad=True)
    teacher = torch.randn(1, 3, 4, requires_grad=True)
    hidden_mse(student, teacher, MASK, proj).backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert teacher.grad is None
    assert student.grad[0, 2].abs().sum() == 0  # the padded token receives no gradient
    with pytest.raises(ValueError, match="projection"):
        hidden_mse(torch.zeros(1, 3, 2), torch.zeros(1, 3, 4), MASK)


def test_attention_mse_counts_real_pairs_only():
    """One head, real 2x2 block differs by 0.5 everywhere: MSE 0.25; pad pairs ignored."""
    teacher = torch.zeros(1, 1, 3, 3)
    student = torch.full((1, 1, 3, 3), 0.5)
    student[..., 2] = 50.0  # padded key column
    student[..., 2, :] = 50.0  # padded query row
    assert attention_mse(student, teacher, MASK).item() == pytest.approx(0.25)


def test_attention_kl_value():
    """Teacher row (3/4, 1/4) vs student (1/2, 1/2): KL = 3/4 ln 1.5 - 1/4 ln 2 per real row."""
    teacher = torch.tensor([[0.75, 0.25, 0.0]]).expand(1, 1, 3, 3).clone()
    student = torch.tensor([[0.5, 0.5, 0.0]]).expand(1, 1, 3, 3).clone()
    expected = 0.75 * math.log(1.5) - 0.25 * math.log(2.0)
    assert attention_kl(student, teacher, MASK).item() == pytest.approx(expected, rel=1e-5)
    assert attention_kl(teacher, teacher, MASK).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="equal head counts"):
        attention_kl(torch.zeros(1, 2, 3, 3), teacher, MASK)


def test_cosine_loss_values():
    """1 - cos: identical 0, orthogonal 1, opposite 2; mean over the two real tokens."""
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    student = torch.tensor([[[0.0, 3.0], [-2.0, 0.0], [1.0, 0.0]]])
    assert cosine_hidden_loss(student, teacher, MASK).item() == pytest.approx(1.5)
    assert cosine_hidden_loss(teacher, teacher, MASK).item() == pytest.approx(0.0, abs=1e-6)


def test_patient_loss_normalises():
    """Scaled copies give 0; unit vectors (1, 0) vs (0, 1) differ by (1, -1): mean sq 1."""
    teacher = torch.tensor([[[1.0, 0.0]]])
    assert patient_loss(5 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)
    assert patient_loss(torch.tensor([[[0.0, 2.0]]]), teacher).item() == pytest.approx(1.0)


def test_relation_kl_zero_when_equal_and_handles_widths():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert relation_kl(q, k, q, k, mask, relation_heads=4).item() == pytest.approx(0, abs=1e-6)
    s_q = torch.randn(2, 3, 4, requires_grad=True)
    loss = relation_kl(s_q, s_q, q, k, mask, relation_heads=2)  # student 4 wide, teacher 8
    loss.backward()
    assert loss.item() > 0 and s_q.grad is not None


def test_relation_kl_two_by_two_value():
    """One head, d = 1, two tokens. Teacher q = (ln 3, 0), k = (1, 1) gives rows with logits
    (ln 3, ln 3) and (0, 0): both uniform. Student q = (0, 0): uniform too -> KL = 0. With
    teacher k = (1, 0): row 1 logits (ln 3, 0) -> (3/4, 1/4) vs uniform: 3/4 ln 1.5 - 1/4 ln 2;
    row 2 stays uniform (0). Mean over two rows."""
    mask = torch.ones(1, 2)
    t_q = torch.tensor([[[math.log(3.0)], [0.0]]])
    t_k = torch.tensor([[[1.0], [0.0]]])
    s = torch.zeros(1, 2, 1)
    expected = (0.75 * math.log(1.5) - 0.25 * math.log(2.0)) / 2
    assert relation_kl(s, s, t_q, t_k, mask, 1).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("student,teacher,strategy,expected", [
    (6, 12, "uniform", [2, 4, 6, 8, 10, 12]),
    (4, 12, "uniform", [3, 6, 9, 12]),
    (6, 12, "skip", [2, 4, 6, 8, 10]),
    (6, 12, "last", [7, 8, 9, 10, 11]),
    (3, 6, [1, 3, 6], [1, 3, 6]),
])
def test_layer_mapping_matches_the_papers(student, teacher, strategy, expected):
    pairs = layer_mapping(student, teacher, strategy)
    assert [t for _, t in pairs] == expected
    assert [s for s, _ in pairs] == list(range(1, len(expected) + 1))


@pytest.mark.parametrize("student,teacher,expected", [
    # r(i * T / S), half up: 4 of 6 -> 1.5, 3, 4.5, 6 -> 2, 3, 5, 6.
    (4, 6, [2, 3, 5, 6]),
    (3, 12, [4, 8, 12]),  # a multiple: TinyBERT's i * k exactly
    (6, 6, [1, 2, 3, 4, 5, 6]),  # same depth: the identity
    (1, 6, [6]),  # one layer learns from the last
    (5, 12, [2, 5, 7, 10, 12]),  # 2.4, 4.8, 7.2, 9.6, 12
    (2, 3, [2, 3]),  # 1.5 rounds up
    # Deeper than the teacher: the layer at the same relative depth, at least 1
    # (4 of 2 -> 0.5, 1, 1.5, 2 -> 1, 1, 2, 2).
    (4, 2, [1, 1, 2, 2]),
    (3, 1, [1, 1, 1]),
])
def test_uniform_mapping_rounds_for_any_depths(student, teacher, expected):
    pairs = layer_mapping(student, teacher, "uniform")
    assert pairs == list(zip(range(1, student + 1), expected))
    teachers = [t for _, t in pairs]
    assert teachers[-1] == teacher  # the last layers always meet
    if student <= teacher:
        assert all(a < b for a, b in zip(teachers, teachers[1:]))  # strictly increasing
    # skip is the same map without the last student layer
    if student > 1:
        assert layer_mapping(student, teacher, "skip") == pairs[:-1]


def test_uniform_mapping_keeps_every_pair_in_range():
    """Every depth pair up to 24 x 24 maps each student layer into 1..T, non-decreasing."""
    for s in range(1, 25):
        for t in range(1, 25):
            teachers = [x for _, x in layer_mapping(s, t, "uniform")]
            assert len(teachers) == s and teachers[-1] == t and min(teachers) >= 1
            assert teachers == sorted(teachers)
            assert len(set(teachers)) == min(s, t)


def test_layer_mapping_errors():
    with pytest.raises(ValueError, match="explicit layer mapping"):
        layer_mapping(3, 6, [1, 2])
    with pytest.raises(ValueError, match="explicit layer mapping"):
        layer_mapping(2, 6, [1, 7])
    with pytest.raises(ValueError, match="unknown layer mapping"):
        layer_mapping(3, 6, "random")
    with pytest.raises(ValueError, match="no deeper than its teacher"):
        layer_mapping(4, 2, "last")
    for strategy in ("skip", "last"):
        with pytest.raises(ValueError, match="no layer to match"):
            layer_mapping(1, 6, strategy)
