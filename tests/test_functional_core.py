"""Pairwise matrices, masks and input validation against explicit loops."""

import itertools

import pytest
import torch

from deepmetric.errors import InputError
from deepmetric.functional import (
    check_embeddings,
    cosine_similarity_matrix,
    euclidean_distance_matrix,
    label_masks,
    squared_euclidean_distance_matrix,
    upper_triangle,
)


def test_euclidean_matches_loop():
    torch.manual_seed(0)
    x, y = torch.randn(7, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    d = euclidean_distance_matrix(x, y)
    for i, j in itertools.product(range(7), range(4)):
        assert d[i, j].item() == pytest.approx(torch.linalg.norm(x[i] - y[j]).item(), rel=1e-10)
    d2 = squared_euclidean_distance_matrix(x)
    assert torch.all(d2.diagonal() == 0)
    assert torch.allclose(d2, d2.T)


def test_cosine_matches_loop_and_zero_row_is_finite():
    torch.manual_seed(1)
    x = torch.randn(6, 3, dtype=torch.float64)
    x[2] = 0.0
    s = cosine_similarity_matrix(x)
    assert torch.isfinite(s).all()
    for i, j in itertools.product(range(6), range(6)):
        if i == 2 or j == 2:
            assert s[i, j] == 0
        else:
            ref = torch.dot(x[i], x[j]) / (x[i].norm() * x[j].norm())
            assert s[i, j].item() == pytest.approx(ref.item(), rel=1e-10)


def test_distance_gradient_finite_at_zero_distance():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    d = euclidean_distance_matrix(x)
    assert d[0, 1] == 0 and d[0, 0] == 0
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_distance_gradcheck_away_from_zero():
    torch.manual_seed(2)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: euclidean_distance_matrix(a, b), (x, y))
    assert torch.autograd.gradcheck(lambda a: cosine_similarity_matrix(a), (x,))


def test_label_masks_and_upper_triangle():
    labels = torch.tensor([0, 1, 0, 2, 1])
    pos, neg = label_masks(labels)
    for i, j in itertools.product(range(5), range(5)):
        assert bool(pos[i, j]) == (i != j and labels[i] == labels[j])
        assert bool(neg[i, j]) == (labels[i] != labels[j])
    tri = upper_triangle(pos)
    assert int(tri.sum()) == int(pos.sum()) // 2
    qpos, qneg = label_masks(torch.tensor([0, 3]), labels)
    assert qpos.tolist() == [[True, False, True, False, False], [False] * 5]
    assert (qneg == ~qpos).all()


@pytest.mark.parametrize(
    "emb, labels, message",
    [
        (torch.randn(4), torch.arange(4), "2-D"),
        (torch.tensor([[float("nan"), 0.0], [1.0, 1.0]]), torch.arange(2), "NaN"),
        (torch.randn(4, 2), torch.arange(3), "4 rows but labels have 3"),
        (torch.randn(4, 2), torch.zeros(4), "integer"),
    ],
)
def test_check_embeddings_errors_name_the_problem(emb, labels, message):
    with pytest.raises(InputError, match=message):
        check_embeddings(emb, labels)
