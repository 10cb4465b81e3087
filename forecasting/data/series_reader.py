"""Read a long Parquet file a chunk of series at a time, so that batch prediction holds one chunk.

``SeriesChunks`` first reads the id column alone (Parquet stores columns apart), finds the
distinct ids and cuts them, in the order of their text (the canonical order of
``forecasting.partition.series_chunks``), into chunks of at most ``size`` series. Each chunk is
then one range of ids, ``first <= id <= last``: every id of the file in that range belongs to
the chunk. A chunk is read row group by row group: a row group whose statistics put every id
outside the range is skipped unread; each other one is read once (the selected columns) and
the chunk's rows taken from it. Each
chunk comes out with the file's row numbers as its index and its rows in file order, the rows
``read_table`` followed by ``series_chunks`` gives (as a set, and in file order within each
series; validation sorts the rest).

The cost follows the file's layout. A file grouped by series in id order (as ``bench/scale.py``
and most exporters write it) is read about once in all; one whose series are interleaved across
every row group is read once per chunk, in the memory of one chunk. Rows with no id go with the
first chunk, where validation names them.

Only ids stored as text are streamed (``string``, ``large_string`` or a dictionary of either): a
range of text ids is the same range in Parquet's byte order and in Python's. ``SeriesChunks.open``
returns None for anything else, and for a file of one chunk; the caller then reads the file whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting.errors import EmptyDataError, ForecastingError, UnreadableFileError

_TEXT = ("string", "large_string")


class SeriesChunks:
    """The chunks of one Parquet file: ``len()`` of them, iterated as frames (see the module)."""

    def __init__(self, path: Path, key: str, ranges: list[tuple[str, str]], selected: list[str] | None):
        import pyarrow.parquet as pq

        self.path, self.key, self.ranges, self.selected = path, key, ranges, selected
        self._file = pq.ParquetFile(path)
        meta = self._file.metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        # The id's leaf column (a nested column before it holds several leaves), for its statistics.
        leaf = next((i for i in range(meta.num_columns) if meta.schema.column(i).path == key), None)
        self._bounds = [_text_bounds(meta.row_group(g), leaf) for g in range(meta.num_row_groups)]
        self.rows: list[int] = []  # each chunk's rows, as counted from the id column (``open``)
        self.groups_read = 0  # row groups read, over every chunk so far

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SeriesChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def open(cls, path: str | Path, key: str, size: int, columns: Sequence[str] = ()) -> SeriesChunks | None:
        """The chunks of ``size`` series of the Parquet file ``path`` by its id column ``key``, or
        None where they cannot be streamed (ids not stored as text, or one chunk in all).
        ``columns`` are the configured column names, as ``read_table`` takes them (and checks)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from forecasting.data.ingest import _check_duplicate_columns, _check_regular_file, _parquet_columns

        path = Path(path)
        _check_regular_file(path)
        try:
            schema = pq.read_schema(path)
            names = list(schema.names)
            _check_duplicate_columns(names, path, [*columns, key])
            if key not in names:
                return None
            kind = schema.field(key).type
            value = kind.value_type if pa.types.is_dictionary(kind) else kind
            if str(value) not in _TEXT:
                return None
            ids = pq.read_table(path, columns=[key]).column(key)
            if pa.types.is_dictionary(kind):
                ids = pc.cast(ids, value)
            counts = pc.value_counts(ids)
            distinct = counts.field("values").to_pylist()
            per_id = counts.field("counts").to_numpy()
        except ForecastingError:
            raise
        except Exception as err:  # pyarrow raises many unrelated types for a bad file
            raise UnreadableFileError(f"cannot read {str(path)!r} as Parquet: {err}") from None
        if len(ids) == 0:
            raise EmptyDataError(f"data file {str(path)!r} has a header but no data rows")
        missing = int(sum(c for v, c in zip(distinct, per_id, strict=True) if v is None))
        order = sorted((v, int(c)) for v, c in zip(distinct, per_id, strict=True) if v is not None)
        # ^ Python's order of text: code points, as UTF-8 bytes sort in Parquet's statistics
        if len(order) <= size:
            return None
        cuts = range(0, len(order), size)
        ranges = [(order[a][0], order[min(a + size, len(order)) - 1][0]) for a in cuts]
        chunks = cls(path, key, ranges, _parquet_columns(names, [*columns, key]))
        chunks.rows = [sum(c for _, c in order[a : a + size]) for a in cuts]
        chunks.rows[0] += missing  # rows with no id go with the first chunk
        return chunks

    def __len__(self) -> int:
        return len(self.ranges)

    def __iter__(self) -> Iterator[pd.DataFrame]:
        for i in range(len(self.ranges)):
            yield self.read(i)

    def read(self, i: int) -> pd.DataFrame:
        """Chunk ``i``: its rows (index: the file's row numbers), in file order. Should the
        row groups' statistics skip a group that holds some of its ids (a writer that recorded
        them wrong), the chunk comes up short of the rows counted in ``open``: it is read again
        without them."""
        frame = self._read(i, trust_statistics=True)
        if frame is None or (self.rows and len(frame) != self.rows[i]):
            frame = self._read(i, trust_statistics=False)
        if frame is None:  # no row at all: the id column counted some, so the file changed
            raise UnreadableFileError(f"cannot read {str(self.path)!r}: it changed while it was read")
        return frame

    def _read(self, i: int, trust_statistics: bool) -> pd.DataFrame | None:
        import pyarrow as pa

        from forecasting.data.ingest import _has_named_index

        first, last = self.ranges[i]
        pieces, rows = [], []
        try:
            for g, (lo, hi, nulls) in enumerate(self._bounds):
                known = trust_statistics and lo is not None and hi is not None
                if known and (hi < first or lo > last) and not (i == 0 and nulls):  # type: ignore[operator]
                    continue  # statistics: no id of this group is in the chunk
                group = self._file.read_row_group(g, columns=self.selected, use_pandas_metadata=True)
                self.groups_read += 1
                take = _in_range(group.column(self.key), first, last, with_missing=i == 0)
                if len(take) == 0:
                    continue
                pieces.append(group.take(pa.array(take)))
                rows.append(self._starts[g] + take)
            if not pieces:
                return None
            table = pa.concat_tables(pieces)
            frame = table.to_pandas()
        except Exception as err:
            raise UnreadableFileError(f"cannot read {str(self.path)!r} as Parquet: {err}") from None
        frame = frame.reset_index(drop=not _has_named_index(frame))
        frame.index = pd.Index(np.concatenate(rows))
        if self.selected is not None:
            frame.attrs["columns_in_file"] = len(self._file.schema_arrow.names)
        return frame


def _in_range(ids: Any, first: str, last: str, with_missing: bool) -> np.ndarray:
    """Positions of the ids (an Arrow column) with ``first <= id <= last`` (and, for the first
    chunk, those with no id)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(ids.type):
        ids = pc.cast(ids, ids.type.value_type)
    inside = pc.and_(pc.greater_equal(ids, first), pc.less_equal(ids, last))
    if with_missing:
        inside = pc.or_kleene(inside, pc.is_null(ids))
    return np.flatnonzero(pc.fill_null(inside, False).to_numpy())


def _text_bounds(group: object, column: int | None) -> tuple[str | None, str | None, bool]:
    """The smallest and largest id of a row group by its statistics (None: not recorded, or not
    text) and whether it may hold rows with no id."""
    stats = None if column is None else group.column(column).statistics  # type: ignore[attr-defined]
    if stats is None or not stats.has_min_max:
        return None, None, True
    try:
        lo, hi = stats.min, stats.max
        lo = lo.decode() if isinstance(lo, bytes) else lo
        hi = hi.decode() if isinstance(hi, bytes) else hi
    except (UnicodeDecodeError, ValueError, TypeError):  # a bound cut inside a character
        return None, None, True
    nulls = stats.null_count is None or stats.null_count > 0 or not stats.has_null_count
    return (lo if isinstance(lo, str) else None), (hi if isinstance(hi, str) else None), nulls
