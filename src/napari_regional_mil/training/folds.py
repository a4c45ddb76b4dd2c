"""Cross-validation folds: stratified by class, grouped by patient (scikit-learn's ``StratifiedGroupKFold``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from ..errors import TrainingError

__all__ = ["stratified_group_folds"]


def stratified_group_folds(
    labels: np.ndarray, patients: np.ndarray, *, n_folds: int, class_names: Sequence[str], seed: int = 0
) -> list[np.ndarray]:
    """Test indices of each fold: every patient in one fold, the classes spread evenly.

    scikit-learn's ``StratifiedGroupKFold`` (shuffled by ``seed``).

    Raises
    ------
    TrainingError
        Fewer than 2 folds, or a class has fewer patients than folds (some test fold
        would hold none of it).
    """
    labels = np.asarray(labels)
    patients = np.asarray(patients, dtype=object)
    if n_folds < 2:
        raise TrainingError(f"cross-validation needs at least 2 folds, got {n_folds}")
    for c, name in enumerate(class_names):
        members = set(patients[labels == c].tolist())
        if 0 < len(members) < n_folds:
            raise TrainingError(
                f"class {name!r} has {len(members)} patient(s), fewer than {n_folds} folds: some test fold "
                f"would hold none of it; use --folds {max(2, len(members))} or fewer, or add slides"
            )
    groups = np.unique(patients.astype(str), return_inverse=True)[1]
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [np.sort(test) for _, test in splitter.split(np.zeros(labels.size), labels, groups)]
