"""DFR: Deep Feature Reweighting (Kirichenko, Izmailov & Wilson, ICLR 2023, "Last Layer
Re-Training is Sufficient for Robustness to Spurious Correlations").

ERM already learns the core features; what is biased is mostly the last layer's weighting
of them. DFR keeps the vanilla model's feature extractor and refits only its last linear
layer on a small *group-balanced* held-out set, here the validation split (the paper's
DFR^Val_Tr: features trained on train, last layer on val). No SGD: the work is done in
``prepare`` (``epochs`` defaults to 0, nothing is trainable), and the refitted weights
are written into the model's last ``nn.Linear``.

The procedure, as in the paper and its code (PolinaKirichenko/deep_feature_reweighting@9d8d5de,
``dfr_evaluate_spurious.py``, DFR on validation with its defaults ``balance_dfr_val`` and
``notrain_dfr_val``, lines 50-55, 394-401):
1. embeddings = the input of the last linear layer (penultimate features, eval mode,
   computed in batches; lines 358-388);
2. C is tuned on the grid (1, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01; line 25): one random half
   of val is split off, one group-balanced subset of it is drawn (lines 73-89) and every C
   is fitted on that same subset by L1 logistic regression (liblinear) and scored by
   worst-group accuracy on the other half (lines 111-120). With ``scaler=train`` (the
   default) the features are standardised with the mean and standard deviation of that
   fit subset, the data the regressions see (lines 101-104: the code's ``x_train`` there
   holds no training-split samples, ``add_train`` being off);
3. with that C, ``n_refits`` (20, line 132) fits on group-balanced subsets of the whole of
   val (every group subsampled to the size of the smallest; lines 139-151) are averaged
   (coefficients and intercepts; lines 166-170, 184-185), de-standardised and written into
   the last layer. With ``scaler=train`` the standardisation here is the *training
   split's* feature mean and standard deviation (lines 135-137, 163-164, 177-178), computed
   in batches from running moments.
``scaler=val`` (this project's earlier rule) standardises both steps with the whole
validation split's statistics instead: it does not depend on how the training split's
features are spread (a model that memorised its training set has training features
unlike held-out ones). Before this followed the code, ``n_refits`` was 10 and every C of
the tuning grid drew its own balanced subset.
Where this simplifies or departs from the code, said once here:
- groups are class x bias attribute and only groups *present* in the set are balanced
  (an empty cell would make every subset empty; the paper's datasets have none);
- ties in worst-group accuracy (frequent when rare groups hold one or two samples) are
  broken by the mean group accuracy, then by the larger C (the code takes the first,
  i.e. largest, C of a tie);
- multi-class: one-vs-rest binary L1 fits (what liblinear did inside the code's
  LogisticRegression; scikit-learn >= 1.8 refuses multi-class liblinear), a class absent
  from a fit set gets weight 0 and a very negative intercept;
- ``balance=reweight`` (not in the paper) keeps every validation sample and weights each
  group's samples by 1/n_g instead of subsampling, for splits whose rarest group holds
  one or two samples;
- the code's option of adding training samples to the refit set is not offered.
Validation metrics of a DFR run are measured on the data its last layer was fitted on.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from debiasbench.data.dataset import Split, input_batches
from debiasbench.core.errors import RunFailed, UserError
from debiasbench.core.hparams import HParam, IntUniform
from debiasbench.contract.method import Batch, Method, RunContext
from debiasbench.models.latent import LatentModel, eval_mode
from debiasbench.train.per_sample_grad import last_linear_name

#: The paper's grid of inverse L1 strengths.
C_GRID: tuple[float, ...] = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
#: Intercept of a class a fit never saw: it is never predicted.
ABSENT_INTERCEPT = -1e4
_MIN_STD = 1e-8
#: Random stream of DFR's random halves and subsets.
DFR_DRAWS = "dfr.draws"


def last_linear(model: LatentModel) -> tuple[str, nn.Linear]:
    """The name and module of ``model``'s last ``nn.Linear``."""
    name = last_linear_name(model.net)
    linear = model.net.get_submodule(name)
    assert isinstance(linear, nn.Linear)  # last_linear_name names an nn.Linear
    return name, linear


@torch.no_grad()
def last_layer_batches(model: LatentModel, x: Tensor | Split, batch_size: int | None = 512) -> Iterator[Tensor]:
    """Penultimate features (the last ``nn.Linear``'s input, eval mode), one batch at a time.

    Refuses a network whose last Linear does not map flat features straight to the logits
    (then its weights are not "the last layer" DFR can refit)."""
    name, linear = last_linear(model)
    seen: dict[str, Tensor] = {}

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        seen["features"], seen["output"] = inputs[0], output

    handle = linear.register_forward_hook(hook)
    try:
        with eval_mode(model):
            for inputs in input_batches(x, batch_size):
                logits = model(inputs)
                if seen.get("output") is not logits or seen["features"].dim() != 2:
                    raise UserError(f"dfr: the last nn.Linear of {model.arch!r} ({name!r}) does not map "
                                    "[N, D] features straight to the logits; DFR cannot refit it")
                yield seen["features"].float()
    finally:
        handle.remove()


def last_layer_inputs(model: LatentModel, x: Tensor | Split,
                      batch_size: int | None = 512) -> tuple[Tensor, nn.Linear]:
    """Penultimate features [N, D] (the last ``nn.Linear``'s input, eval mode) and that layer."""
    return torch.cat(list(last_layer_batches(model, x, batch_size))), last_linear(model)[1]


def _kept_constant(std: Tensor) -> Tensor:
    """A constant feature's standard deviation is taken as 1: it is left as it is."""
    return torch.where(std > _MIN_STD, std, torch.ones_like(std))


def standardiser(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation (``ddof=0``, as scikit-learn's ``StandardScaler``) per
    feature; a constant feature gets 1."""
    return features.mean(0), _kept_constant(features.std(0, unbiased=False))


def feature_moments(batches: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
    """``standardiser`` of the concatenated batches, from running float64 moments (Chan et
    al.'s pairwise update), so a whole split's features never sit in memory at once. The
    moments are updated on the batches' device and copied to the host once, at the end."""
    # zeros broadcast against the first batch, which the update then copies exactly
    count, mean, m2 = 0, torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    for batch in batches:
        batch = batch.detach().double()
        n, batch_mean = len(batch), batch.mean(0)
        batch_m2 = (batch - batch_mean).square().sum(0)
        delta, total = batch_mean - mean, count + n
        mean = mean + delta * (n / total)
        m2 = m2 + batch_m2 + delta.square() * (count * n / total)
        count = total
    if count == 0:
        raise RunFailed("dfr: the training split is empty; scaler=train needs its features")
    return mean.cpu(), _kept_constant((m2 / count).sqrt()).cpu()


def balanced_subset(groups: Tensor, generator: torch.Generator) -> Tensor:
    """Indices of a random subset with the same number of samples from every present group
    (the size of the smallest); samples of group -1 (unknown) are left out."""
    known = (groups >= 0).nonzero().squeeze(1)
    order = known[torch.randperm(len(known), generator=generator)]
    sorted_groups, by_group = torch.sort(groups[order], stable=True)  # random order within groups
    order = order[by_group]
    counts = torch.bincount(sorted_groups)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(len(order)) - starts[sorted_groups]
    return order[rank < counts[counts > 0].min()]


def group_weights(groups: Tensor) -> Tensor:
    """Per-sample weight 1/n_g scaled to mean 1: every present group weighs the same."""
    counts = torch.bincount(groups).double()
    weights = 1.0 / counts[groups]
    return weights * len(groups) / weights.sum()


#: liblinear's solver number for L1-regularised logistic regression (``L1R_LR``), what
#: ``LogisticRegression(solver="liblinear", penalty="l1")`` runs; and that estimator's
#: defaults the authors' code keeps (``tol``, ``max_iter``, ``intercept_scaling``).
L1R_LR, LIBLINEAR_TOL, LIBLINEAR_MAX_ITER, INTERCEPT_SCALING = 6, 1e-4, 100, 1.0


def liblinear_binding():
    """scikit-learn's liblinear binding (``sklearn.svm._liblinear``), or None where a
    scikit-learn version no longer has it (then ``LogisticRegression`` fits)."""
    try:
        from sklearn.svm import _liblinear
    except ImportError:  # a private module: absent from some future release
        return None
    return _liblinear


def binary_l1_logistic(z: np.ndarray, target: np.ndarray, c: float,
                       sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """One binary L1 logistic regression of ``target`` (0/1, both present) on ``z``
    (float64, C order): coefficients [D] and intercept, bit for bit what
    ``LogisticRegression(C=c, solver="liblinear", penalty="l1").fit(z, target,
    sample_weight)`` gives (tests/test_dfr.py), calling the liblinear binding that
    estimator calls with the same arguments, its random seed drawn from numpy's global
    generator as ``random_state=None`` draws it. On DFR's fit sets (tens of samples) the
    estimator's checks of its inputs and parameters took about 90% of a fit's time: about
    10x slower than liblinear itself (``docs/performance.md``)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    liblinear = liblinear_binding()
    if liblinear is None:
        return _estimator_l1_logistic(z, target, c, sample_weight)
    weights = np.ones(len(z)) if sample_weight is None else np.ascontiguousarray(sample_weight, dtype=np.float64)
    seed = np.random.randint(np.iinfo("i").max)  # what check_random_state(None) draws from
    liblinear.set_verbosity_wrap(0)  # liblinear prints every iteration unless told not to
    raw, n_iter = liblinear.train_wrap(z, np.asarray(target, dtype=np.float64), False, L1R_LR, LIBLINEAR_TOL,
                                       INTERCEPT_SCALING, c, np.ones(2), LIBLINEAR_MAX_ITER, seed, 0.1, weights)
    if max(n_iter) >= LIBLINEAR_MAX_ITER:
        warnings.warn("Liblinear failed to converge, increase the number of iterations.", ConvergenceWarning,
                      stacklevel=3)  # DFR's call of fit_l1_logistic
    return raw[0, :-1], float(INTERCEPT_SCALING * raw[0, -1])


def _estimator_l1_logistic(z: np.ndarray, target: np.ndarray, c: float,
                           sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """``binary_l1_logistic`` through scikit-learn's estimator (its checks included)."""
    import sklearn
    from sklearn.linear_model import LogisticRegression

    version = tuple(int(part) for part in sklearn.__version__.split(".")[:2])
    l1 = {"l1_ratio": 1.0} if version >= (1, 8) else {"penalty": "l1"}
    model = LogisticRegression(C=c, solver="liblinear", **l1)
    model.fit(z, target, sample_weight=sample_weight)
    return model.coef_[0], float(model.intercept_[0])


def fit_l1_logistic(z: np.ndarray, y: np.ndarray, c: float, num_classes: int,
                    sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest L1 logistic regressions (liblinear, ``binary_l1_logistic``):
    coefficients [K, D], intercepts [K]."""
    coef = np.zeros((num_classes, z.shape[1]))
    intercept = np.full(num_classes, ABSENT_INTERCEPT)
    if len(np.unique(y)) < 2:
        raise RunFailed(f"dfr: a balanced fit set holds only class {int(y[0])}; it needs at least two")
    z = np.ascontiguousarray(z, dtype=np.float64)
    # the estimator's own refusals, once per fit set instead of once per class
    if not np.isfinite(z).all():
        raise RunFailed("dfr: the standardised penultimate features hold NaN or infinite values")
    if np.max(z) > 1e30:  # liblinear would not return (scikit-learn refuses it too)
        raise RunFailed("dfr: a standardised penultimate feature exceeds 1e30; liblinear cannot fit it")
    for k in np.unique(y):
        coef[k], intercept[k] = binary_l1_logistic(z, (y == k).astype(np.float64), c, sample_weight)
    return coef, intercept


def worst_and_mean_group_accuracy(pred: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """Lowest and mean accuracy over the groups present."""
    present = np.unique(groups)
    hits = np.bincount(groups, weights=(pred == y).astype(float))[present]
    accuracy = hits / np.bincount(groups)[present]
    return float(accuracy.min()), float(accuracy.mean())


class DFR(Method):
    name = "dfr"
    description = "Refit the vanilla model's last layer on group-balanced validation data (DFR)."
    requires = frozenset({"bias_labels"})
    starts_from_vanilla = True
    hparams = {
        "C": HParam(None, type=float, low=1e-6,
                    help="inverse L1 strength; null = tuned on the paper's grid by worst-group accuracy"),
        "n_refits": HParam(20, IntUniform(1, 20), low=1, help="balanced refits averaged (authors' code: 20)"),
        "balance": HParam("subsample", choices=("subsample", "reweight"),
                          help="subsample groups to the smallest (paper) or weight samples by 1/n_g"),
        "scaler": HParam("train", choices=("train", "val"),
                         help="standardise with the fit subset / training split (code) or validation statistics"),
    }
    train_defaults = {"epochs": 0}

    def prepare(self, ctx: RunContext) -> None:
        val, num_classes = ctx.dataset.splits["val"], ctx.dataset.num_classes
        groups = val.groups(ctx.dataset.num_bias).cpu()
        features, linear = last_layer_inputs(ctx.model, val, ctx.config.eval_batch_size)
        if linear.bias is None:
            raise UserError("dfr: the last nn.Linear has no bias; DFR needs one for the intercept")
        known = groups >= 0
        features, groups, y = features.cpu().double()[known], groups[known], val.y.cpu()[known]
        by_train = self.hp["scaler"] == "train"
        generator = ctx.stream(DFR_DRAWS, device="cpu")  # the fits run on the host (scikit-learn)
        c = self.hp["C"]
        if c is None:
            c, worst = self.tune(features, y, groups, num_classes, generator)
            ctx.log_metrics({"dfr_tune_worst_group_acc": worst})
        if by_train:  # dfr_evaluate_spurious.py:135-137
            batches = last_layer_batches(ctx.model, ctx.dataset.splits["train"], ctx.config.eval_batch_size)
            mean, std = feature_moments(batches)
        else:
            mean, std = standardiser(features)
        z = ((features - mean) / std).numpy()
        fits = [self.fit(z, y, groups, c, num_classes, self.draw(groups, generator))
                for _ in range(self.hp["n_refits"])]
        coef = torch.from_numpy(np.mean([f[0] for f in fits], axis=0))
        intercept = torch.from_numpy(np.mean([f[1] for f in fits], axis=0))
        weight = coef / std  # back to the features' own scale
        bias = intercept - weight @ mean
        with torch.no_grad():
            linear.weight.copy_(weight.to(linear.weight))
            linear.bias.copy_(bias.to(linear.bias))
        ctx.log_metrics({"dfr_C": c, "dfr_fit_size": float(self.fit_size),
                         "dfr_nonzero_share": float((coef != 0).double().mean())})

    def draw(self, groups: Tensor, generator: torch.Generator) -> Tensor:
        """Indices of one fit set: a balanced subset, or every sample (``balance=reweight``)."""
        if self.hp["balance"] == "reweight":
            return torch.arange(len(groups))
        return balanced_subset(groups, generator)

    def fit(self, z: np.ndarray, y: Tensor, groups: Tensor, c: float, num_classes: int,
            chosen: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """One L1 fit on the samples ``chosen`` (group-weighted under ``balance=reweight``)."""
        weights = group_weights(groups[chosen]).numpy() if self.hp["balance"] == "reweight" else None
        self.fit_size = len(chosen)
        return fit_l1_logistic(z[chosen.numpy()], y[chosen].numpy(), c, num_classes, weights)

    def tune(self, features: Tensor, y: Tensor, groups: Tensor, num_classes: int,
             generator: torch.Generator) -> tuple[float, float]:
        """C of the grid whose fit on one fit set drawn from one half scores the best
        worst-group accuracy on the other half (``dfr_on_validation_tune``, lines 62-128)."""
        order = torch.randperm(len(y), generator=generator)
        fit_half, score_half = order[len(y) // 2:], order[:len(y) // 2]
        chosen = fit_half[self.draw(groups[fit_half], generator)]  # one fit set for every C
        if self.hp["scaler"] == "train":  # fitted on the regressions' own inputs, lines 101-104
            mean, std = standardiser(features[chosen])
        else:
            mean, std = standardiser(features)
        z = ((features - mean) / std).numpy()
        zs, ys, gs = z[score_half.numpy()], y[score_half].numpy(), groups[score_half].numpy()
        scores = {}
        for c in C_GRID:
            coef, intercept = self.fit(z, y, groups, c, num_classes, chosen)
            scores[c] = worst_and_mean_group_accuracy((zs @ coef.T + intercept).argmax(1), ys, gs)
        best = max(C_GRID, key=lambda c: (*scores[c], c))
        return best, scores[best][0]

    def trainable_parameters(self, model: LatentModel) -> Iterable[nn.Parameter]:
        return []

    def loss(self, model: LatentModel, batch: Batch):
        raise RuntimeError("DFR does not train with SGD; it refits the last layer in prepare")
