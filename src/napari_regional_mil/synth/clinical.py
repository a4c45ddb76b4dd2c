"""Synthetic clinical variables for the context task (``synth --task context --clinical``).

Each slide of a context cohort gets three clinical columns:

``grade``
    the tumour grade, ``G1``, ``G2`` or ``G3``. Within each context class exactly half
    the slides (rounded down) are ``G3``; the rest alternate ``G1``/``G2``.
``age``
    years, Gaussian around 64 (sd 11, clipped to 30-95), independent of everything; about
    one slide in twenty has no value (an empty cell), so a model needs its missing
    indicator.
``sex``
    ``F`` or ``M`` at random, independent of everything.

**The rule**: a slide is ``positive`` if and only if it is ``inflamed`` (the context task's
positive class: the motif lies inside tumour regions) **and** its grade is ``G3``;
otherwise ``negative``. ``age`` and ``sex`` are distractors. Neither source alone decides
the label: the slide alone cannot tell an inflamed ``G1``/``G2`` slide (negative) from an
inflamed ``G3`` one (positive), the grade alone cannot tell an excluded ``G3`` slide
(negative) from an inflamed one. With half the slides of each context ``G3``, the best
a single source can reach is an AUC of about 0.83 (each leaves a third of the negatives
tied with the positives); both together decide the label exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CLASS_NAMES", "COLUMNS", "RULE", "clinical_label", "clinical_values"]

#: Class names of the clinical context task (sorted: the positive class is index 1).
CLASS_NAMES = ("negative", "positive")
#: The clinical columns written next to ``slide,label``.
COLUMNS = ("grade", "age", "sex")
#: The rule, as written into the ground truth.
RULE = "positive iff the slide is inflamed (motif inside tumour regions) and grade == G3"


def clinical_label(context_label: str, values: dict[str, str]) -> str:
    """The label of a slide with this context label and these clinical values (the rule)."""
    inflamed = context_label == "inflamed"  # the context task's positive class
    return CLASS_NAMES[int(inflamed and values["grade"] == "G3")]


def clinical_values(context_labels: Sequence[str], *, seed: int = 0) -> list[dict[str, str]]:
    """Clinical values (``grade``, ``age``, ``sex`` as text) for slides with these context labels.

    Parameters
    ----------
    context_labels
        ``"inflamed"``/``"excluded"`` per slide.
    seed
        Seeds everything (same labels and seed: same values).
    """
    rng = np.random.default_rng([seed, 279])
    labels = np.asarray(list(context_labels), dtype=object)
    grades = np.full(labels.size, None, dtype=object)
    for name in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == name))
        half = members.size // 2
        grades[members[:half]] = "G3"
        for j, i in enumerate(members[half:]):  # in random order: alternate G1, G2
            grades[i] = ("G1", "G2")[j % 2]
    ages = np.clip(np.round(rng.normal(64.0, 11.0, labels.size)), 30, 95).astype(int)
    missing_age = rng.random(labels.size) < 0.05
    sexes = rng.choice(np.array(["F", "M"], dtype=object), size=labels.size)
    return [
        {"grade": str(g), "age": "" if m else str(a), "sex": str(s)}
        for g, a, m, s in zip(grades, ages, missing_age, sexes)
    ]
