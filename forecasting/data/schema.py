"""The canonical frame's columns, named once.

Every frame past ingest is long and sorted: one row per (series, time step), series contiguous,
with ``SERIES`` (str; a categorical of them in a pipeline run's frames, ``categorical_ids``),
``TIME`` (datetime64, tz-aware when the data has a zone), ``TARGET`` (float64, NaN where
unobserved) and then the covariates by their own names.
"""

from __future__ import annotations

import pandas as pd

SERIES = "series_id"
TIME = "t"
TARGET = "y"
# While the input is validated each row carries its data-row number, so errors can name it.
ROW = "_row"


def categorical_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its series ids held as a categorical: a code per row (4 bytes) into the
    distinct ids, in their order of appearance, instead of a string per row. A pipeline run keeps
    several copies of its rows (the canonical frame, the scaled segments, the refit's frame), so at
    100,000 series this is gigabytes; every consumer reads ids through ``factorize``, ``unique``
    or ``groupby``, which give the same ids in the same order either way. Other columns are shared,
    not copied."""
    if isinstance(frame[SERIES].dtype, pd.CategoricalDtype):
        return frame
    codes, uniques = pd.factorize(frame[SERIES], sort=False)
    return frame.assign(**{SERIES: pd.Categorical.from_codes(codes, categories=pd.Index(uniques))})


def string_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with categorical series ids (``categorical_ids``) back as text: what a frame
    handed to a user, a model signature or a served model carries."""
    if not isinstance(frame[SERIES].dtype, pd.CategoricalDtype):
        return frame
    return frame.assign(**{SERIES: frame[SERIES].astype("str")})
