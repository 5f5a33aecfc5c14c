"""The RR-ClArC authors' rules, checked against hand computations on small tensors.

Each rule is cited in the code it tests (frederikpahde/rrclarc@222d917): how the svm /
ridge / lasso / logistic CAVs are fitted.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import Tensor

from debiasbench.cav import (
    AUTHORS_PENALTY_GRID,
    authors_folds,
    authors_sample_weights,
    fit_cav,
)


def _cos(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    a, b = torch.as_tensor(a).double().reshape(-1), torch.as_tensor(b).double().reshape(-1)
    return float(a @ b / (a.norm() * b.norm()))


# --------------------------------------------------------------------------- item 3: svm / ridge / lasso / logistic


def test_the_authors_sample_weights_are_one_over_the_class_size_scaled_to_a_largest_of_one():
    y = np.array([True, False, False, False, True, False])
    np.testing.assert_allclose(authors_sample_weights(y), [1, 0.5, 0.5, 0.5, 1, 0.5])


def test_the_authors_penalty_grid_runs_from_1e_5_to_1e4_in_decades():
    np.testing.assert_allclose(AUTHORS_PENALTY_GRID, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1e3, 1e4])


def _separable_data(n: int = 60, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced labels (a third positive), a shift along a random direction, an offset."""
    g = np.random.default_rng(seed)
    y = np.zeros(n, dtype=bool)
    y[g.permutation(n)[: n // 3]] = True
    direction = g.normal(size=d)
    x = g.normal(size=(n, d)) + 1.5 * y[:, None] * direction + 0.3
    return x, y


def _oriented(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``w`` signed like every CAV here: towards the artifact samples' mean."""
    w = w / np.linalg.norm(w)
    return -w if w @ (x[y].mean(0) - x[~y].mean(0)) < 0 else w


def test_ridge_cav_is_the_hand_computed_weighted_ridge_without_intercept_at_the_cv_best_alpha():
    x, y = _separable_data()
    t = np.where(y, 1.0, -1.0)
    w = np.where(y, 1 / y.sum(), 1 / (~y).sum())
    w = w / w.max()

    def ridge(rows: np.ndarray, alpha: float) -> np.ndarray:
        xw = x[rows] * w[rows, None]
        return np.linalg.solve(x[rows].T @ xw + alpha * np.eye(x.shape[1]), xw.T @ t[rows])

    folds = np.array_split(np.arange(len(y)), 5)  # KFold(5), unshuffled: contiguous
    best, best_score = None, -np.inf
    for alpha in [10.0 ** i for i in range(-5, 5)]:
        scores = []
        for k, test in enumerate(folds):
            train = np.concatenate([f for j, f in enumerate(folds) if j != k])
            residual = t[test] - x[test] @ ridge(train, alpha)
            scores.append(1 - (residual ** 2).sum() / ((t[test] - t[test].mean()) ** 2).sum())  # R^2, unweighted
        if np.mean(scores) > best_score:
            best, best_score = alpha, np.mean(scores)
    expected = _oriented(ridge(np.arange(len(y)), best), x, y)
    cav = fit_cav(torch.from_numpy(x), torch.from_numpy(y), "ridge")
    assert _cos(cav, expected) > 1 - 1e-9
    # An intercept or standardised features would give another direction.
    assert _cos(fit_cav(torch.from_numpy(x), torch.from_numpy(y), "ridge_standardised"), expected) < 0.999


@pytest.mark.parametrize("kind", ["svm", "lasso", "logistic"])
def test_svm_lasso_and_logistic_cavs_refit_at_the_penalty_with_the_best_unweighted_cv_score(kind: str):
    """The selection written out by hand around scikit-learn's estimators at fixed
    penalties: weighted fits, folds as GridSearchCV's default, the estimator's score
    computed by hand from its predictions, unweighted (accuracy, or R^2 for lasso)."""
    from sklearn.linear_model import Lasso, LogisticRegression
    from sklearn.svm import LinearSVC

    x, y = _separable_data(seed=1)
    w = authors_sample_weights(y)
    regression = kind == "lasso"
    t = np.where(y, 1, -1) if kind != "svm" else y.astype(int)

    def fitted(rows: np.ndarray, penalty: float) -> np.ndarray:
        if kind == "svm":
            model = LinearSVC(C=penalty, fit_intercept=False, random_state=0)
        elif kind == "lasso":
            model = Lasso(alpha=penalty, fit_intercept=False)
        else:
            model = LogisticRegression(C=penalty, fit_intercept=False)
        return model.fit(x[rows], t[rows], sample_weight=w[rows]).coef_.reshape(-1)

    def score(coef: np.ndarray, rows: np.ndarray) -> float:
        out = x[rows] @ coef  # no intercept: the decision function is x . w
        if regression:
            return 1 - ((t[rows] - out) ** 2).sum() / ((t[rows] - t[rows].mean()) ** 2).sum()
        positive = out > 0
        return float((positive == (t[rows] == 1)).mean())

    folds = authors_folds(y, regression)
    assert len(folds) == 5
    scores = [np.mean([score(fitted(train, p), test) for train, test in folds]) for p in AUTHORS_PENALTY_GRID]
    best = AUTHORS_PENALTY_GRID[int(np.argmax(scores))]  # ties: the first
    expected = _oriented(fitted(np.arange(len(y)), best), x, y)
    cav = fit_cav(torch.from_numpy(x), torch.from_numpy(y), kind)
    assert _cos(cav, expected) > 1 - 1e-6


@pytest.mark.parametrize("kind", ["svm", "ridge", "lasso", "logistic"])
def test_the_authors_kinds_fit_without_intercept_so_a_constant_feature_takes_its_place(kind: str):
    x, y = _separable_data(n=90, seed=2)
    with_constant = np.concatenate([x, np.full((len(y), 1), 3.0)], axis=1)
    cav = fit_cav(torch.from_numpy(with_constant), torch.from_numpy(y), kind)
    standardised = fit_cav(torch.from_numpy(with_constant), torch.from_numpy(y), f"{kind}_standardised")
    assert abs(float(cav[-1])) > 1e-3
    assert abs(float(standardised[-1])) < 1e-6
