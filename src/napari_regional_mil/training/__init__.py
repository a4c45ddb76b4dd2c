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

from .cohort import Cohort, CohortRow, read_cohort
from .crossval import CrossValResult, FoldResult, cross_validate
from .datasets import LabelledSlide, load_cohort_embeddings, load_feature_bags
from .feature_files import find_feature_file, read_feature_file
from .folds import stratified_group_folds
from .predict import attention_path, predict_slide, read_attention, write_attention
from .prediction import SlidePrediction
from .train import TrainConfig, TrainResult, split_validation, train_model

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
