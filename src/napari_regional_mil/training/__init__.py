"""Training and evaluating the first model.

Cohort CSV, datasets, training job, cross-validation, metrics, prediction.

::

    from ..training import (
        read_cohort, load_cohort_embeddings, train_model, TrainConfig, predict_slide)
    cohort = read_cohort("labels.csv")
    slides = run_job(load_cohort_embeddings(cohort, cache_dir="cache"))
    result = run_job(train_model(slides, class_names=cohort.class_names))  # yields Progress
    result.save("model.safetensors")
    prediction = predict_slide(result.checkpoint, slides[0].embeddings)
"""

from typing import TYPE_CHECKING, Any

from ..lazy import resolve as _resolve

if TYPE_CHECKING:  # the names below, for type checkers and IDEs
    from .cohort import Cohort, CohortRow, read_cohort
    from .crossval import CrossValResult, FoldResult, cross_validate
    from .datasets import LabelledSlide, load_cohort_embeddings, load_feature_bags
    from .feature_files import find_feature_file, read_feature_file
    from .folds import stratified_group_folds
    from .predict import attention_path, predict_slide, read_attention, write_attention
    from .prediction import SlidePrediction
    from .train import TrainConfig, TrainResult, split_validation, train_model

#: Public name -> submodule. Imported on first use (PEP 562), so importing a torch-free
#: submodule (e.g. ``training.cohort_table`` from a widget) does not import torch.
_LAZY = {
    "Cohort": "cohort",
    "CohortRow": "cohort",
    "read_cohort": "cohort",
    "CrossValResult": "crossval",
    "FoldResult": "crossval",
    "cross_validate": "crossval",
    "LabelledSlide": "datasets",
    "load_cohort_embeddings": "datasets",
    "load_feature_bags": "datasets",
    "find_feature_file": "feature_files",
    "read_feature_file": "feature_files",
    "stratified_group_folds": "folds",
    "attention_path": "predict",
    "predict_slide": "predict",
    "read_attention": "predict",
    "write_attention": "predict",
    "SlidePrediction": "prediction",
    "TrainConfig": "train",
    "TrainResult": "train",
    "split_validation": "train",
    "train_model": "train",
}


def __getattr__(name: str) -> Any:
    """Import a public name's submodule when the name is first used."""
    return _resolve(__name__, _LAZY, globals(), name)


__all__ = [
    "Cohort",
    "CohortRow",
    "CrossValResult",
    "FoldResult",
    "LabelledSlide",
    "SlidePrediction",
    "TrainConfig",
    "TrainResult",
    "attention_path",
    "cross_validate",
    "find_feature_file",
    "load_cohort_embeddings",
    "load_feature_bags",
    "predict_slide",
    "read_attention",
    "read_cohort",
    "read_feature_file",
    "split_validation",
    "stratified_group_folds",
    "train_model",
    "write_attention",
]
