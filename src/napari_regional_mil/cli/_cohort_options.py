"""Options naming the cohort table's columns (``--slide-column`` ...), shared by every command that reads one.

Argparse only here; :func:`columns_from_args` builds the core's
:class:`~napari_regional_mil.training.cohort.CohortColumns` lazily.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..training.cohort import CohortColumns

__all__ = ["add_column_options", "columns_from_args"]


def add_column_options(parser: argparse.ArgumentParser) -> None:
    """``--slide-column``, ``--label-column``, ``--patient-column``, ``--split-column``."""
    group = parser.add_argument_group(
        "cohort table columns",
        "CSV, TSV or XLSX; other columns are kept and ignored. Defaults: slide (or slide_id), label, "
        "patient (or case_id, patient_id), split; CLAM's case_id,slide_id,label is read as is",
    )
    group.add_argument("--slide-column", metavar="NAME", help="column with the slide name or path")
    group.add_argument("--label-column", metavar="NAME", help="column with the class label")
    group.add_argument("--patient-column", metavar="NAME", help="column grouping slides by patient")
    group.add_argument("--split-column", metavar="NAME", help="column with train/val/test")


def columns_from_args(args: argparse.Namespace) -> CohortColumns:
    """The :class:`~napari_regional_mil.training.cohort.CohortColumns` the options name."""
    from ..training.cohort import CohortColumns  # lazy: help (imports torch)

    return CohortColumns(
        slide=getattr(args, "slide_column", None),
        label=getattr(args, "label_column", None),
        patient=getattr(args, "patient_column", None),
        split=getattr(args, "split_column", None),
    )
