"""The canonical frame's columns, named once.

Every frame past ingest is long and sorted: one row per (series, time step), series contiguous,
with ``SERIES`` (str), ``TIME`` (datetime64, tz-aware when the data has a zone), ``TARGET``
(float64, NaN where unobserved) and then the covariates by their own names.
"""

SERIES = "series_id"
TIME = "t"
TARGET = "y"
# While the input is validated each row carries its data-row number, so errors can name it.
ROW = "_row"
