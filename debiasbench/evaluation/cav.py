"""Concept activation vectors (CAVs): the latent direction of an artifact, and TCAV.

Artifact-unlearning methods (RR-ClArC, A-ClArC, P-ClArC) need one direction ``v`` in
the model's latent space that "is" the artifact: they penalise gradients along it,
shift activations along it, or project it out. ``fit_cav`` finds it from latent
activations of samples with (label 1) and without (label 0) the artifact; the
evaluation scores it with ``cav_alignment`` (against a known true direction) and
``tcav_score`` (how often the model's output increases along it).

Conventions, shared by every kind so that methods can swap them freely:

- Conv activations ``[N, C, H, W]`` are max-pooled over space to ``[N, C]`` first, as the
  RR-ClArC authors' code does: a small artifact lights up few positions, which a
  mean over space would dilute.
- The result is a unit-length float32 vector on the device of the activations, pointing
  towards the artifact samples (positive dot product with the difference of class means),
  so that "adding ``v``" always means "more artifact", whatever a solver's sign.

Where a rule follows the RR-ClArC authors' code, the docstring cites it as
``frederikpahde/rrclarc@222d917 <file>:<lines>``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn

from debiasbench.data.dataset import Split, eval_batch_for, input_batches
from debiasbench.models.latent import LatentModel, eval_mode

__all__ = [
    "CAV_KINDS",
    "CAV_SAMPLES",
    "pool_activations",
    "fit_cav",
    "latent_activations",
    "latents_and_predictions",
    "artifact_cav_samples",
    "NoPredictedGroup",
    "fit_artifact_cav",
    "cav_alignment",
    "tcav_score",
]

#: The scikit-learn kinds fitted as the authors fit them (raw features, no intercept,
#: penalty by grid search); each also exists as ``<kind>_standardised``.
SKLEARN_KINDS: tuple[str, ...] = ("svm", "ridge", "lasso", "logistic")
#: Suffix of the standardised variants (this benchmark's earlier fitting).
STANDARDISED = "_standardised"
#: Every kind ``fit_cav`` accepts; ``pattern`` is the default.
CAV_KINDS: tuple[str, ...] = ("pattern", *SKLEARN_KINDS, *(k + STANDARDISED for k in SKLEARN_KINDS))
#: Which samples of the class a CAV is fitted on (``artifact_cav_samples``): ``predicted``
#: (those the model predicts as their own class, the authors') or ``all``.
CAV_SAMPLES: tuple[str, ...] = ("predicted", "all")

#: The authors' penalty grid, for every scikit-learn kind (C of LinearSVC and
#: LogisticRegression, alpha of Ridge and Lasso): ``10 ** i`` for i in -5..4
#: (frederikpahde/rrclarc@222d917 utils/cav.py:27,36,47,58).
AUTHORS_PENALTY_GRID: tuple[float, ...] = tuple(10.0 ** i for i in range(-5, 5))
#: Folds of the authors' grid search (``authors_folds``).
AUTHORS_FOLDS = 5

#: Regularisation grid of the ``svm_standardised`` kind (inverse strength C of LinearSVC), chosen by CV.
SVM_C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: Ridge penalty of ``ridge_standardised`` (insensitive to it over decades here).
RIDGE_ALPHA = 1.0
#: Lasso penalty of ``lasso_standardised``: a feature survives when its correlation-like
#: score cov(x_j, y) / std(x_j) exceeds it, so 0.01 keeps every feature with a visible
#: effect while zeroing pure noise features.
LASSO_ALPHA = 0.01
#: Inverse L2 strength of ``logistic_standardised``: stronger than sklearn's 1.0 because CAV
#: data are small and nearly separable, where weak L2 lets the weights chase noise.
LOGISTIC_C = 0.1
#: Standard deviations below this are treated as constant features (left unscaled).
_MIN_STD = 1e-8


def pool_activations(acts: Tensor) -> Tensor:
    """``[N, C, H, W]`` -> ``[N, C]`` by the maximum over space; ``[N, D]`` unchanged.

    Max pooling (not mean) follows the RR-ClArC authors' code: a localised artifact
    fires at a few positions, and its CAV should not depend on the image size.
    Other ranks are ambiguous (tokens first or channels first?) and are rejected.
    """
    if acts.ndim == 2:
        return acts
    if acts.ndim == 4:
        return acts.amax(dim=(2, 3))
    raise ValueError(f"activations must be [N, D] or [N, C, H, W], got shape {tuple(acts.shape)}")


def _check_labels(labels: Tensor, n: int) -> Tensor:
    """``labels`` as a bool tensor [N]; ValueError unless binary with both classes present."""
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape [{n}] (one per activation row), got {tuple(labels.shape)}")
    if labels.dtype == torch.bool:
        binary = labels
    else:
        if not bool(((labels == 0) | (labels == 1)).all()):
            values = torch.unique(labels.detach().cpu())[:10].tolist()
            raise ValueError(f"labels must be 0 or 1 (1 = has the artifact), got values {values}")
        binary = labels == 1
    positives = int(binary.sum())
    if positives == 0 or positives == n:
        present = "1 (artifact)" if positives else "0 (clean)"
        raise ValueError(f"a CAV needs samples of both labels 0 and 1; only label {present} is present "
                         f"among {n} samples")
    return binary


def _unknown_kind(kind: object) -> ValueError:
    return ValueError(f"unknown CAV kind {kind!r}; allowed kinds: {', '.join(CAV_KINDS)}")


def fit_cav(acts: Tensor, labels: Tensor, kind: str = "pattern") -> Tensor:
    """The unit CAV [D] separating ``labels == 1`` (artifact) from ``labels == 0`` in ``acts``.

    ``acts`` is ``[N, D]`` or ``[N, C, H, W]`` (max-pooled over space first). Kinds:

    - ``pattern`` (default): the signal pattern cov(a, y) / var(y), in torch (the authors'
      ``signal``, frederikpahde/rrclarc@222d917 utils/cav.py:66-74). For binary y this is
      exactly mean(a | y=1) - mean(a | y=0): the direction the artifact *adds* to the
      activations, which is what ClArC corrections move along. It ignores the noise
      covariance, so it is robust and needs no hyper-parameters.
    - ``svm``, ``ridge``, ``lasso``, ``logistic``: fitted as the authors fit them
      (utils/cav.py:18-64; ``_fit_authors``): LinearSVC, Ridge, Lasso or
      LogisticRegression on the *raw* features without intercept, the regressions on
      targets +-1, every sample weighted 1 / (size of its class) scaled to a largest
      weight of 1, the penalty chosen from ``AUTHORS_PENALTY_GRID`` (1e-5 ... 1e4) by the
      estimator's 5-fold cross-validated score, then refitted on all samples.
    - ``<kind>_standardised``: this benchmark's earlier fitting of the same four models
      (``_fit_standardised``): on standardised features, with intercept, the two classes
      weighted equally, ``svm`` with C from ``SVM_C_GRID`` by 3-fold balanced accuracy,
      the others at the fixed ``RIDGE_ALPHA``, ``LASSO_ALPHA``, ``LOGISTIC_C``; weights
      mapped back to ``acts`` space (w / std). One penalty then means the same for any
      layer's scale, and the direction does not depend on where the origin of the
      activations lies (the authors' fits without intercept do).

    The scikit-learn kinds return *filter* directions (the normal of a decision
    hyperplane), which account for the noise covariance and can differ from the
    ``pattern``.

    Raises ValueError for an unknown kind, non-binary labels, a single class, or a
    zero direction (e.g. lasso removed every weight).
    """
    if kind not in CAV_KINDS:
        raise _unknown_kind(kind)
    pooled = pool_activations(acts)
    if pooled.shape[0] < 2:
        raise ValueError(f"a CAV needs at least 2 samples, got {pooled.shape[0]}")
    binary = _check_labels(labels.to(pooled.device), pooled.shape[0])
    if not bool(torch.isfinite(pooled).all()):
        raise ValueError("activations contain NaN or infinite values; cannot fit a CAV")
    # float64 for the statistics: latents may be bf16/fp16 and D large.
    a = pooled.detach().to(torch.float64)
    y = binary.to(torch.float64)
    mean_difference = a[binary].mean(0) - a[~binary].mean(0)

    if kind == "pattern":
        yc = y - y.mean()
        direction = (yc @ (a - a.mean(0))) / (yc @ yc)
    else:
        x_host, y_host = a.cpu().numpy(), binary.cpu().numpy()
        if kind.endswith(STANDARDISED):
            weights = _fit_standardised(x_host, y_host, kind.removesuffix(STANDARDISED))
        else:
            weights = _fit_authors(x_host, y_host, kind)
        direction = torch.from_numpy(weights).to(a.device, torch.float64)

    norm = direction.norm()
    if not bool(torch.isfinite(norm)) or float(norm) <= 1e-12:
        hint = ""
        if kind == "lasso_standardised":
            hint = " (lasso removed every weight: lower LASSO_ALPHA or use another kind)"
        elif kind == "lasso":
            hint = " (lasso removed every weight at the penalty its grid search chose)"
        raise ValueError(f"the {kind!r} CAV is the zero vector{hint}; the labels may not be "
                         f"linearly visible in these activations")
    direction = direction / norm
    if float(direction @ mean_difference) < 0:
        direction = -direction  # solvers' signs are arbitrary; "+v" must mean "more artifact"
    return direction.to(device=acts.device, dtype=torch.float32)


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-sample weights giving both classes the same total weight (mean weight 1)."""
    n, positives = y.shape[0], int(y.sum())
    return np.where(y, n / (2.0 * positives), n / (2.0 * (n - positives)))


def authors_sample_weights(y: np.ndarray) -> np.ndarray:
    """The authors' CAV sample weights: 1 / (samples of the sample's class), divided by the
    largest, so the smaller class weighs 1 per sample and both classes the same in total
    (frederikpahde/rrclarc@222d917 utils/cav.py:18-21)."""
    positives = int(y.sum())
    weights = np.where(y, 1.0 / positives, 1.0 / (y.shape[0] - positives))
    return weights / weights.max()


def _authors_estimator(kind: str):
    """(estimator, name of its penalty, whether it regresses on +-1) as the authors build it.

    Constructor values as in frederikpahde/rrclarc@222d917 utils/cav.py: LinearSVC(random_state=0,
    fit_intercept=False) (l.26), Ridge(alpha=100, fit_intercept=False) (l.35),
    Lasso(alpha=0.01, fit_intercept=False) (l.45), LogisticRegression(fit_intercept=False)
    (l.56); everything else is scikit-learn's default (squared hinge, lbfgs with 100
    iterations, ...). The constructor penalty is used only where no grid search is possible.
    """
    from sklearn.linear_model import Lasso, LogisticRegression, Ridge
    from sklearn.svm import LinearSVC

    if kind == "svm":
        return LinearSVC(random_state=0, fit_intercept=False), "C", False
    if kind == "ridge":
        return Ridge(alpha=100, fit_intercept=False), "alpha", True
    if kind == "lasso":
        return Lasso(alpha=0.01, fit_intercept=False), "alpha", True
    if kind == "logistic":
        # y = +-1 for logistic too (utils/cav.py:59): the same classes, relabelled.
        return LogisticRegression(fit_intercept=False), "C", True
    raise _unknown_kind(kind)  # pragma: no cover - fit_cav checks the kind first


def authors_folds(y: np.ndarray, regression: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs of the authors' grid search: GridSearchCV's default
    ``cv`` (frederikpahde/rrclarc@222d917 utils/cav.py:27,36,47,58 pass none), i.e. 5
    unshuffled folds, stratified by ``y`` for the classifiers (LinearSVC, LogisticRegression)
    and contiguous for the regressions (Ridge, Lasso)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = KFold(AUTHORS_FOLDS) if regression else StratifiedKFold(AUTHORS_FOLDS)
    return list(splitter.split(np.zeros((y.shape[0], 1)), y))


def _ridge_grid_scores(x: np.ndarray, target: np.ndarray, weights: np.ndarray,
                       folds: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Mean held-out R^2 of weighted ridge without intercept for every ``AUTHORS_PENALTY_GRID``
    value: what refitting ``Ridge(alpha, fit_intercept=False)`` per value and fold scores,
    from one eigendecomposition of ``X^T W X`` per fold (``coef = (X^T W X + alpha I)^-1 X^T W t``)
    instead of one solve per value and fold: the grid then costs little more than one fit."""
    scores = np.zeros(len(AUTHORS_PENALTY_GRID))
    for train, test in folds:
        xw = x[train].astype(np.float64) * weights[train, None]
        eigenvalues, basis = np.linalg.eigh(xw.T @ x[train].astype(np.float64))
        projected = basis.T @ (xw.T @ target[train])
        held_out = x[test].astype(np.float64) @ basis
        truth = target[test]
        total = float(((truth - truth.mean()) ** 2).sum())
        for i, alpha in enumerate(AUTHORS_PENALTY_GRID):
            residual = truth - held_out @ (projected / (eigenvalues + alpha))
            scores[i] += 1.0 - float((residual ** 2).sum()) / total if total > 0 else 0.0
    return list(scores / len(folds))


def _fit_authors(x: np.ndarray, y: np.ndarray, kind: str) -> np.ndarray:
    """Weights [D] of the authors' fit of ``kind`` on raw ``x`` (frederikpahde/rrclarc@222d917
    utils/cav.py:18-64): no intercept, ``authors_sample_weights`` passed to every fit, the
    penalty picked from ``AUTHORS_PENALTY_GRID`` by the mean over ``authors_folds`` of the
    estimator's own unweighted ``score`` on the held-out fold (accuracy, R^2; ties: the
    grid's first value), then refitted on all samples.

    The cross-validation is written out rather than run through GridSearchCV: that is
    what GridSearchCV did in the scikit-learn of the authors' code (early 2024: fits
    weighted, scores unweighted), whereas releases after scikit-learn PR #30743 (merged
    March 2025) also pass ``sample_weight`` to the scorer, which picks other penalties.

    Below 5 samples, or with a single sample of one class (a stratified fold could then
    train on one class), there is nothing to cross-validate: the estimator is fitted once
    at the authors' constructor penalty (``_authors_estimator``).
    """
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning

    estimator, penalty, signed = _authors_estimator(kind)
    target = y.astype(np.int64) * 2 - 1 if signed else y.astype(np.int64)
    weights = authors_sample_weights(y)
    smaller_class = min(int(y.sum()), int((~y).sum()))
    with warnings.catch_warnings():
        # A CAV is a direction: a solver stopped near the optimum gives nearly the same one;
        # a class with fewer members than folds only makes some test folds one-class.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="The least populated class")
        if y.shape[0] >= AUTHORS_FOLDS and smaller_class >= 2 and kind == "ridge":
            scores = _ridge_grid_scores(x, target.astype(np.float64), weights, authors_folds(y, regression=True))
            estimator.set_params(alpha=AUTHORS_PENALTY_GRID[int(np.argmax(scores))])
        elif y.shape[0] >= AUTHORS_FOLDS and smaller_class >= 2:
            folds = authors_folds(y, regression=kind in ("ridge", "lasso"))
            scores = []
            for value in AUTHORS_PENALTY_GRID:
                fold_scores = []
                for train, test in folds:
                    fitted = clone(estimator).set_params(**{penalty: value})
                    fitted.fit(x[train], target[train], sample_weight=weights[train])
                    fold_scores.append(fitted.score(x[test], target[test]))
                scores.append(float(np.mean(fold_scores)))
            estimator.set_params(**{penalty: AUTHORS_PENALTY_GRID[int(np.argmax(scores))]})
        estimator.fit(x, target, sample_weight=weights)
    return np.asarray(estimator.coef_, dtype=np.float64).reshape(-1)


def _fit_standardised(x: np.ndarray, y: np.ndarray, kind: str) -> np.ndarray:
    """Weights [D] of a scikit-learn linear model fitted on standardised ``x``, in ``x`` space."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso, LogisticRegression, Ridge
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import LinearSVC

    mean = x.mean(0)
    std = x.std(0)
    std = np.where(std > _MIN_STD, std, 1.0)  # constant features stay 0 after centring
    z = (x - mean) / std
    target = y.astype(np.float64)
    sample_weight = _balanced_weights(y)

    with warnings.catch_warnings():
        # A CAV is a direction: a solver stopped near the optimum gives nearly the same one.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if kind == "svm":
            svm = LinearSVC(class_weight="balanced", max_iter=5000, random_state=0)
            folds = min(3, int(y.sum()), int((~y).sum()))
            if folds >= 2:
                search = GridSearchCV(
                    svm, {"C": list(SVM_C_GRID)}, scoring="balanced_accuracy",
                    cv=StratifiedKFold(folds, shuffle=True, random_state=0),
                )
                search.fit(z, y)
                coef = search.best_estimator_.coef_
            else:  # too few samples of one class to cross-validate
                coef = svm.set_params(C=1.0).fit(z, y).coef_
        elif kind == "ridge":
            coef = Ridge(alpha=RIDGE_ALPHA).fit(z, target, sample_weight=sample_weight).coef_
        elif kind == "lasso":
            coef = Lasso(alpha=LASSO_ALPHA, max_iter=10000).fit(z, target, sample_weight=sample_weight).coef_
        elif kind == "logistic":
            coef = LogisticRegression(C=LOGISTIC_C, class_weight="balanced", max_iter=2000).fit(z, y).coef_
        else:  # pragma: no cover - fit_cav checks the kind first
            raise _unknown_kind(kind)
    return np.asarray(coef, dtype=np.float64).reshape(-1) / std


def latent_activations(model: LatentModel, x: Tensor | Split, batch_size: int | None = 256, *,
                       pool: bool = False) -> Tensor:
    """``model.latent(x)`` for all of ``x`` (a split or a tensor), in batches, eval mode,
    without autograd.

    Eval mode so BatchNorm uses running statistics and dropout is off: a CAV must describe
    the model as it predicts, not one noisy training pass. The model's training flag is
    restored afterwards. With ``pool`` each batch is max-pooled right away
    (``pool_activations``), which keeps memory at [N, C] for large feature maps.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    parts: list[Tensor] = []
    with eval_mode(model), torch.no_grad():
        for inputs in input_batches(x, batch_size):
            latent = model.latent(inputs)
            parts.append(pool_activations(latent) if pool else latent)
    if not parts:
        raise ValueError("latent_activations needs at least one sample, got an empty x")
    return torch.cat(parts)


def latents_and_predictions(model: LatentModel, x: Tensor | Split,
                            batch_size: int | None = 256) -> tuple[Tensor, Tensor]:
    """Max-pooled latents ``[N, C]`` (or ``[N, D]``) and predicted classes ``[N]`` of ``x``,
    from one forward pass per batch, in eval mode, without autograd (see
    ``latent_activations``).

    The latent is the latent module's output as ``model.latent`` returns it (its first call
    per forward, pooled before any later in-place layer or a wrapper's edit of it, such as
    P-ClArC's projection, can change it); the prediction is the whole model's argmax.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    latents: list[Tensor] = []
    predictions: list[Tensor] = []

    def keep_first(module: nn.Module, inputs: tuple, output: object) -> None:
        if len(latents) == len(predictions):  # the first call in this batch's forward
            if not isinstance(output, Tensor):
                raise TypeError(f"the latent layer must output a tensor, got {type(output).__name__}")
            latents.append(pool_activations(output))

    with eval_mode(model), torch.no_grad():
        handle = model.latent_module.register_forward_hook(keep_first)
        try:
            for inputs in input_batches(x, batch_size):
                predictions.append(model(inputs).argmax(dim=1))
                if len(latents) != len(predictions):
                    raise ValueError("the latent layer did not run in the model's forward")
        finally:
            handle.remove()
    if not latents:
        raise ValueError("latents_and_predictions needs at least one sample, got an empty x")
    return torch.cat(latents), torch.cat(predictions)


def artifact_cav_samples(model: LatentModel, split: Split, attacked_class: int | None,
                         samples: str = "predicted", batch_size: int | None = 256) -> tuple[Tensor, Tensor]:
    """The max-pooled latents ``[M, C]`` a CAV of the artifact is fitted on, and their
    artifact labels ``[M]`` (bool), on the device of the split.

    The samples of ``attacked_class`` (every sample when None), label = the split's
    ``artifact`` flag: within one class the artifact is the only systematic difference
    between the two groups, whereas across classes the class itself would leak into the
    direction. ``samples``:

    - ``predicted`` (the authors'): only those ``model`` predicts as their own class.
      frederikpahde/rrclarc@222d917 experiments/preprocessing/global_collect_relevances_and_activations.py:138-176
      collects the activations of the class's samples and keeps a sample only when the
      model's argmax is that class (l.159; also unless its LRP heatmap sums to exactly
      zero, which a conservative explanation of the predicted logit practically never does,
      so that test, an LRP pass per sample, is not repeated here);
      ``model_training/correction_methods/clarc.py:52-105`` reads those vectors back, keeps
      the training samples among them (l.77-81) and fits the CAV and the clean / artifact
      mean lengths on exactly them (l.89-94). With ``attacked_class`` None each class keeps
      its samples predicted as itself (the authors' ``cav_scope`` other than
      ``attacked_class``, clarc.py:57-72).
    - ``all``: every sample of the class, whatever the model predicts.

    One forward pass per batch gives both the latents and the predictions. Raises
    ValueError, naming the rule and the counts, when the class's samples lack one of the
    two groups, and its subclass ``NoPredictedGroup`` when only the predicted ones do (the
    authors' code then fails: with no sample it concatenates nothing, with one group it
    divides by zero in the sample weights); callers fall back to ``all`` on the latter.
    """
    if samples not in CAV_SAMPLES:
        raise ValueError(f"unknown CAV samples rule {samples!r}; allowed: {', '.join(CAV_SAMPLES)}")
    if attacked_class is None:
        selected = torch.ones_like(split.y, dtype=torch.bool)
        where = "the split"
    else:
        selected = split.y == attacked_class
        where = f"class {attacked_class}"
    artifact = split.artifact[selected].bool()
    _check_groups(artifact, f"cannot fit an artifact CAV on {where}")
    chosen = split.subset(selected.nonzero().squeeze(1))
    if samples == "all":
        return latent_activations(model, chosen, batch_size, pool=True), artifact
    acts, predicted = latents_and_predictions(model, chosen, batch_size)
    kept = predicted == chosen.y.to(predicted.device)
    artifact = artifact.to(kept.device)[kept]
    predicted_as = "itself" if attacked_class is None else f"class {attacked_class}"
    _check_groups(artifact, f"cannot fit an artifact CAV on the samples of {where} that the model predicts "
                            f"as {predicted_as} (the authors' rule)", NoPredictedGroup)
    return acts[kept], artifact


class NoPredictedGroup(ValueError):
    """The samples a model predicts as their class lack the artifact or the clean group."""


def _check_groups(artifact: Tensor, what: str, error: type[ValueError] = ValueError) -> None:
    n_artifact = int(artifact.sum())
    n_clean = int(artifact.numel()) - n_artifact
    if n_artifact == 0 or n_clean == 0:
        raise error(f"{what}: it has {n_artifact} samples with the artifact and {n_clean} without; "
                    f"both must be present")


def fit_artifact_cav(model: LatentModel, split: Split, attacked_class: int | None, kind: str = "pattern",
                     batch_size: int | None = 256, samples: str = "predicted") -> Tensor:
    """The CAV of the artifact at ``model``'s latent layer, fitted on ``split``'s samples of
    ``attacked_class`` that ``samples`` chooses (``artifact_cav_samples``: by default those
    the model predicts as the class, as the authors do; ``NoPredictedGroup`` where they
    lack a group). Returns a unit float32 vector [C] (or [D]).
    """
    if kind not in CAV_KINDS:
        raise _unknown_kind(kind)
    acts, artifact = artifact_cav_samples(model, split, attacked_class, samples, batch_size)
    return fit_cav(acts, artifact.to(acts.device), kind)


def cav_alignment(cav: Tensor, true_direction: Tensor) -> float:
    """Cosine similarity between ``cav`` and ``true_direction`` (both flattened).

    1 means the fitted CAV found exactly the known artifact direction; it is only
    meaningful where both live in the same space (same number of elements).
    """
    a = cav.detach().reshape(-1).to(torch.float64)
    b = true_direction.detach().reshape(-1).to(a.device, torch.float64)
    if a.numel() != b.numel():
        raise ValueError(f"cav has {a.numel()} elements and true_direction {b.numel()}; they must match")
    na, nb = a.norm(), b.norm()
    if float(na) == 0.0 or float(nb) == 0.0:
        raise ValueError("cav_alignment is undefined for a zero vector")
    return float((a @ b) / (na * nb))


def _mean_pool(grad: Tensor) -> Tensor:
    """Latent gradients ``[N, C, H, W]`` -> ``[N, C]`` by the mean over space; ``[N, D]`` unchanged."""
    if grad.ndim == 2:
        return grad
    if grad.ndim == 4:
        return grad.mean(dim=(2, 3))
    raise ValueError(f"latent must be [N, D] or [N, C, H, W], got shape {tuple(grad.shape)}")


def tcav_score(model: LatentModel, x: Tensor | Split, cav: Tensor, target: Tensor | int,
               batch_size: int | None = 256) -> float:
    """Share of samples whose target logit increases along ``cav`` in the latent (TCAV).

    For each sample, the gradient of logit ``target`` (an int for all, or a tensor [N]
    of classes) with respect to the latent activation is averaged over space (as the
    RR-ClArC penalty does) and dotted with ``cav``; the score is the number of positive
    dot products over the number of non-zero ones, NaN when every one is zero (the output
    does not move along ``cav`` at all). A score near 1 on artifact samples means the
    model uses the artifact direction towards that class. This is the authors'
    ``mean_tcav_quotient`` (frederikpahde/rrclarc@222d917 experiments/evaluation/measure_tcav.py:
    the attacked class's logit, l.182, differentiated w.r.t. the CAV layer's output,
    l.151-154,184-187; per sample the sign of the spatial mean of grad . cav, l.206-207;
    positives over positives plus negatives, l.216). Their other quotient, ``tcav_quotient``
    (l.200-201,214), counts every spatial position as a vote instead of every sample.
    The latent is made a fresh leaf, so the score works for frozen parameters and inside
    ``torch.no_grad``; eval mode, training flag restored.
    """
    n = len(x)
    if n == 0:
        raise ValueError("tcav_score needs at least one sample, got an empty x")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batch_size = eval_batch_for(batch_size, x.sample_shape if isinstance(x, Split) else tuple(x.shape[1:]))
    targets = torch.as_tensor(target).reshape(-1)
    if targets.numel() == 1:
        targets = targets.expand(n)
    if targets.numel() != n:
        raise ValueError(f"target must be an int or have one class per sample ({n}), got {targets.numel()}")

    def leaf(latent: Tensor) -> Tensor:
        return latent.detach().requires_grad_(True)

    counts: list[Tensor] = []  # [positive, negative] per batch, read once at the end
    with eval_mode(model), torch.enable_grad():
        for start, inputs in zip(range(0, n, batch_size), input_batches(x, batch_size)):
            logits, latent = model.forward_with_latent(inputs, edit=leaf)
            t = targets[start:start + batch_size].to(logits.device, torch.long)
            # Samples are independent in eval mode, so the sum's gradient is per sample.
            chosen = logits.gather(1, t.unsqueeze(1)).sum()
            (grad,) = torch.autograd.grad(chosen, latent)
            pooled = _mean_pool(grad)
            v = cav.detach().reshape(-1).to(pooled.device, pooled.dtype)
            if v.numel() != pooled.shape[1]:
                raise ValueError(f"cav has {v.numel()} elements but the latent has {pooled.shape[1]} "
                                 f"channels")
            sensitivity = pooled @ v
            counts.append(torch.stack([(sensitivity > 0).sum(), (sensitivity < 0).sum()]))
    positive, negative = torch.stack(counts).sum(0).tolist()
    return positive / (positive + negative) if positive + negative else float("nan")
