"""Clinical variables of the patient ([0279]): the columns chosen, their raw values, their encoding.

Torch-free (numpy only), so the model settings (:mod:`..settings`) and the CLI's ``--help``
read it without importing the first model. :mod:`.spec` holds the records, the columns and
their parsing; :mod:`.encoding` the encoded variables and their fitting on the training slides.
"""

from .encoding import ClinicalEncoding, ClinicalVariable, fit_clinical_encoding
from .spec import (
    KINDS,
    MISSING_POLICIES,
    MISSING_VALUES,
    UNKNOWN,
    ClinicalColumn,
    ClinicalRecord,
    ClinicalSpec,
    is_missing,
    parse_clinical_columns,
)

__all__ = [
    "KINDS",
    "MISSING_POLICIES",
    "MISSING_VALUES",
    "UNKNOWN",
    "ClinicalColumn",
    "ClinicalEncoding",
    "ClinicalRecord",
    "ClinicalSpec",
    "ClinicalVariable",
    "fit_clinical_encoding",
    "is_missing",
    "parse_clinical_columns",
]
