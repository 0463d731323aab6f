"""descend networks as scikit-learn estimators: :class:`DescendClassifier` and :class:`DescendRegressor`.

The recipe's sections are the constructor's parameters (a dict each, over a ``recipe``: a TOML file, a
:class:`~descend.config.Config` or a dict, whose ``[data]`` and ``seed`` give way to the arrays and
``random_state``), and their fields are nested parameters, as scikit-learn names them: ``optimizer__lr``,
``model__hidden``, ``train__epochs``.
So the estimators work in a :class:`~sklearn.pipeline.Pipeline`, :class:`~sklearn.model_selection.GridSearchCV`,
``cross_val_score(..., n_jobs=2)`` and :func:`~sklearn.base.clone`, and pass scikit-learn's own estimator checks::

    from sklearn.model_selection import GridSearchCV
    net = DescendClassifier(model={"name": "mlp", "hidden": [32]}, train={"epochs": 30, "batch_size": 16})
    search = GridSearchCV(net, {"optimizer__lr": [1e-3, 1e-2]}, cv=3).fit(X, y)

Every ``fit`` builds a fresh network from ``random_state`` (the recipe's seed; the default, 0, makes every fold of
a cross-validation start from the same, reproducible initialisation), unless ``warm_start=True``, which continues
training the fitted network (optimizer state included) for ``train.epochs`` more epochs. ``partial_fit`` trains one
epoch on the rows it is given (a classifier is told every class on the first call, as in scikit-learn). The inputs
are scaled as a recipe's are (``scale``: fitted on the training rows of the first fit); ``val_fraction`` holds out
a validation split from them (what early stopping watches). The skorch library (Tietz et al.) is the model for
this; it re-initialises its network on every ``fit`` by default too.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from . import config as cfg
from .data import DataBundle, DatasetInfo, Split
from .data.core import as_tensor
from .data.scaling import Scaler, fit_scaler
from .data.splits import split_indices
from .ensemble import probabilities
from .runs import experiment

#: The recipe sections an estimator takes as parameters (each a dict of the section's fields, or None).
SECTIONS = ("model", "train", "optimizer", "schedule", "regularization", "early_stopping", "averaging", "augment")
#: The estimator's rows come as arrays; a recipe's [data] section must still name something, and nothing reads this.
ARRAYS = "arrays.npz"


class _DescendEstimator(BaseEstimator):
    """What the classifier and the regressor share: parameters, fitting, the network's outputs."""

    _task: str

    def __init__(
        self,
        recipe=None,
        *,
        model=None,
        train=None,
        optimizer=None,
        schedule=None,
        regularization=None,
        early_stopping=None,
        averaging=None,
        augment=None,
        scale="standardize",
        val_fraction=0.0,
        random_state=0,
        warm_start=False,
        verbose=False,
    ):
        self.recipe = recipe
        self.model = model
        self.train = train
        self.optimizer = optimizer
        self.schedule = schedule
        self.regularization = regularization
        self.early_stopping = early_stopping
        self.averaging = averaging
        self.augment = augment
        self.scale = scale
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose

    # ------------------------------------------------------------------------------------------ parameters
    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters; with ``deep``, also each section's fields as ``section__field``."""
        params = super().get_params(deep=deep)
        if deep:
            for section in SECTIONS:
                if isinstance(params.get(section), dict):
                    params.update({f"{section}__{k}": v for k, v in params[section].items()})
        return params

    def set_params(self, **params):
        """Set parameters; ``section__field`` sets one field of a recipe section (the section dict is copied)."""
        nested: dict[str, dict] = {}
        plain = {}
        for key, value in params.items():
            head, sep, leaf = key.partition("__")
            if sep and head in SECTIONS:
                nested.setdefault(head, {})[leaf] = value
            else:
                plain[key] = value
        super().set_params(**plain)
        for section, fields in nested.items():
            setattr(self, section, {**(getattr(self, section) or {}), **fields})
        return self

    def recipe_config(self, epochs: int | None = None) -> cfg.Config:
        """The recipe these parameters describe (checked as a recipe is; a mistake is a ValueError naming it)."""
        raw = {}
        if self.recipe is not None:
            recipe = cfg.load(self.recipe) if isinstance(self.recipe, (str, Path)) else self.recipe
            raw = recipe.model_dump(exclude_none=True) if isinstance(recipe, cfg.Config) else copy.deepcopy(recipe)
            raw.pop("name", None)
            if raw.get("ensemble") is not None:
                raise ValueError("an estimator is one network: leave [ensemble] out of its recipe")
        for section in SECTIONS:
            given = getattr(self, section)
            if given is not None:
                raw[section] = {**raw.get(section, {}), **copy.deepcopy(dict(given))}
        if epochs is not None:
            raw["train"] = {**raw.get("train", {}), "epochs": epochs}
        seed = self.random_state if self.random_state is not None else int(np.random.SeedSequence().entropy % 2**31)
        raw.update(seed=seed, data={"name": ARRAYS, "scale": self.scale, "val_fraction": self.val_fraction})
        return cfg.validate(raw, source=type(self).__name__)

    # ----------------------------------------------------------------------------------------------- fitting
    def fit(self, X, y):
        """Train on rows ``X`` and targets ``y``; a fresh network unless ``warm_start`` (then it trains on)."""
        return self._fit(X, y, warm=self.warm_start)

    def _fit(self, X, y, *, warm: bool, epochs: int | None = None, classes=None):
        first = not (warm and hasattr(self, "model_"))
        X, y = validate_data(
            self,
            X,
            y,
            reset=first,
            dtype=(np.float64, np.float32),
            multi_output=True,
            y_numeric=self._task == "regression",
        )
        x = _float32(X)
        targets = self._targets(y, first, classes)
        config = self.recipe_config(epochs)
        bundle = self._bundle(x, targets, config, scaler=None if first else self.scaler_,
                              target_scaler=None if first else self.target_scaler_)
        if first:
            run = experiment.build(config, bundle)  # seeded from random_state: a fresh network every fit
        else:
            run = experiment.Experiment(config, bundle, self._trainer(config, bundle), self.__dict__.get("_stopper"))
        result = run.fit(progress=bool(self.verbose))
        self.model_ = run.trainer.model.eval()
        self.scaler_ = bundle.info.scaler
        self.target_scaler_ = bundle.info.target_scaler  # regression targets standardised as [data] target_scale
        self.history_ = list(result.history)
        self.n_iter_ = len(self.history_)
        self._fitted_trainer, self._stopper = run.trainer, run.early_stopping
        return self

    def _trainer(self, config: cfg.Config, bundle: DataBundle):
        """The fitted trainer (warm start), or one rebuilt around the fitted network (after unpickling)."""
        trainer = self.__dict__.get("_fitted_trainer")
        if trainer is None:
            trainer = experiment.build(config, bundle).trainer
            trainer.model.load_state_dict(self.model_.state_dict())
        return trainer

    def _bundle(self, x: np.ndarray, targets: np.ndarray, config: cfg.Config, *, scaler, target_scaler=None
                ) -> DataBundle:
        """The rows as descend's data: a validation split held out when asked, scaling fitted on the training rows
        (regression targets too, unless ``data.target_scale = "none"``)."""
        classification = self._task == "classification"
        if config.data.val_fraction > 0:
            idx = split_indices(
                targets,
                val_fraction=config.data.val_fraction,
                test_fraction=0.0,
                seed=config.seed,
                stratify=classification,
            )
            parts = {"train": idx["train"], "val": idx["val"]}
        else:
            parts = {"train": np.arange(len(x))}
        raw = {k: as_tensor(x[i]) for k, i in parts.items()}
        if scaler is None:
            scaler = fit_scaler(config.data.scale, raw["train"])
        k = len(self.classes_) if classification else None
        if target_scaler is None and not classification and config.data.target_scale == "standardize":
            target_scaler = Scaler.fit("standardize", as_tensor(targets[parts["train"]]))
        splits = {}
        for name, t in raw.items():
            y = as_tensor(targets[parts[name]])
            splits[name] = Split(scaler.transform(t) if scaler is not None else t,
                                 target_scaler.transform(y) if target_scaler is not None else y, self._task, k,
                                 target_scaler=target_scaler)
        names = [str(n) for n in self.feature_names_in_] if hasattr(self, "feature_names_in_") else None
        info = DatasetInfo(
            name=ARRAYS,
            task=self._task,
            input_shape=(x.shape[1],),
            num_classes=k,
            num_outputs=k or targets.shape[1],
            sizes={n: len(s) for n, s in splits.items()},
            source=f"arrays given to {type(self).__name__}.fit",
            scaler=scaler,
            target_scaler=target_scaler,
            feature_names=names,
        )
        return DataBundle(splits["train"], splits.get("val"), None, info)

    # --------------------------------------------------------------------------------------------- outputs
    @torch.inference_mode()
    def _outputs(self, X, batch_size: int = 1024) -> torch.Tensor:
        """The network's outputs (logits for a classifier) for rows ``X``, float32 on the CPU."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        x = as_tensor(_float32(X))
        if self.scaler_ is not None:
            x = self.scaler_.transform(x)
        device = next(self.model_.parameters()).device
        return torch.cat(
            [self.model_(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
        )

    def __getstate__(self) -> dict:
        """Pickled (joblib, scikit-learn's model persistence) without the trainer: the network and scaling stay;
        a warm start after unpickling continues from the network with a fresh optimizer state."""
        state = dict(super().__getstate__())
        state.pop("_fitted_trainer", None)
        state.pop("_stopper", None)
        return state


class DescendClassifier(ClassifierMixin, _DescendEstimator):
    """A descend network as a scikit-learn classifier (:mod:`descend.sklearn`): ``classes_`` are the labels seen in
    ``fit`` (any sortable values), ``predict_proba``'s columns follow them, ``score`` is the accuracy."""

    _task = "classification"

    def _targets(self, y: np.ndarray, first: bool, classes) -> np.ndarray:
        check_classification_targets(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # a column of labels: scikit-learn's DataConversionWarning, then used
        if y.ndim != 1:
            raise ValueError(f"{type(self).__name__} takes one label per row, got targets of shape {y.shape}")
        if first:
            self.classes_ = np.unique(y) if classes is None else np.unique(np.asarray(classes))
            if len(self.classes_) < 2:
                raise ValueError(f"the targets hold one class ({self.classes_[0]!r}); a classifier needs 2 or more")
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(
                f"y holds labels {unknown[:5].tolist()} that are not in classes_ {self.classes_.tolist()[:10]}"
            )
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def partial_fit(self, X, y, classes=None):
        """One epoch on rows ``X``; the first call names every class (``classes``), as scikit-learn's do."""
        if not hasattr(self, "model_") and classes is None:
            raise ValueError("the first partial_fit needs classes=: every label the data will hold")
        return self._fit(X, y, warm=True, epochs=1, classes=classes)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape ``(n_samples, n_classes)``, columns in the order of ``classes_``."""
        p = probabilities(self._outputs(X)).double()
        return (p / p.sum(dim=1, keepdim=True)).numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row, as a label of ``classes_``."""
        best = self.predict_proba(X).argmax(axis=1)
        return self.classes_[best]


class DescendRegressor(RegressorMixin, _DescendEstimator):
    """A descend network as a scikit-learn regressor (:mod:`descend.sklearn`): one target or several (``y`` of
    shape ``(n, k)``); ``score`` is R²."""

    _task = "regression"

    def _targets(self, y: np.ndarray, first: bool, classes) -> np.ndarray:
        if first:
            self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
            self._one_target = y.ndim == 1
        t = _float32(y.reshape(len(y), -1))
        if t.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {t.shape[1]} targets per row; this regressor was fitted on {self.n_outputs_}")
        return t

    def partial_fit(self, X, y):
        """One epoch on rows ``X`` (the network is built on the first call)."""
        return self._fit(X, y, warm=True, epochs=1)

    def predict(self, X) -> np.ndarray:
        """Predicted values: shape ``(n,)`` for one target, ``(n, k)`` for k."""
        out = self._outputs(X)
        if self.__dict__.get("target_scaler_") is not None:  # the network learned standardised targets
            out = self.target_scaler_.inverse_transform(out)
        out = out.double().numpy()
        return out[:, 0] if self._one_target else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def _float32(a: np.ndarray) -> np.ndarray:
    """float32 values, refused (ValueError) where float32 cannot hold them."""
    if np.abs(a).max(initial=0) > np.finfo(np.float32).max:
        raise ValueError("values beyond float32's range (3.4e38); scale them down first")
    return np.ascontiguousarray(a, dtype=np.float32)


def expected_failed_checks(estimator) -> dict[str, str]:
    """The scikit-learn estimator checks a descend estimator is not expected to pass, each with the reason (for
    ``parametrize_with_checks(..., expected_failed_checks=...)``)."""
    return {
        "check_methods_subset_invariance": "float32 matrix products pick their kernels by batch size, so a row's "
        "output moves by float32 rounding (~1e-7 relative) between a batch and its subset; the check allows "
        "1e-7 (float64's scale)"
    }
