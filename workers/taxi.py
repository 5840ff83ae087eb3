"""NYC TLC yellow-trip workloads: the EMR ``pyspark-taxi-trip.py`` ETL job and five aggregations,
as Distributed Map runs with a reduce step. Design and layout: ``docs/workloads-taxi.md``.

Schema drift: :func:`normalise` maps every era of TLC's yellow-trip Parquet onto :data:`SCHEMA`.

**Stats** (``pipelines/taxi-stats.yaml``, the definitions are ``workers/taxi_results.py``). Map
step :func:`stats`: an item is one Parquet file of a listing, read batch by batch (bounded
memory); one pass computes the additive partials of all five results (:func:`partials`,
:func:`combine`), written as one object named by the file's ETag, so a rerun overwrites it::

    {Dest}/taxi/partials/<etag>-<key digest>.parquet

Reduce step :func:`stats_reduce`: combines the partials its run's outputs list, finishes the
results (exact medians from merged duration histograms, :func:`exact_medians`) and writes::

    {Dest}/taxi/stats/{daily,top_zones,payment_mix,durations}.parquet and identity.json
    {Dest}/taxi/stats/_stats.json           written last

**ETL** (``pipelines/taxi-etl.yaml``): the input rows, in listing order, are cut into N contiguous
ranges; an item is one range (a part number). Map step :func:`etl` writes part ``j`` of ``N``
(normalised rows plus the processing timestamp ``current_date``); reduce step
:func:`etl_reduce` checks that exactly the N parts exist and hold every row, removes parts of
an earlier run with another N, logs the row count and writes the manifest last::

    {Dest}/taxi/etl/part-<j>-of-<N>.parquet
    {Dest}/taxi/etl/_manifest.json

Python API: :func:`compute_stats`, :func:`run_etl`, :func:`load_stats`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, BinaryIO

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runner import MapSpec, RunFailed, WorkerError, run
from runner.reduce import ReduceContext
from runner.results import iter_result_records
from workers.locations import bare_etag, location_url, object_url
from workers.taxi_results import COLUMNS, TaxiResults

__all__ = [
    "ETL_SCHEMA",
    "KEYS",
    "OPTIONAL",
    "SCHEMA",
    "SchemaMismatch",
    "combine",
    "compute_stats",
    "describe_drift",
    "etl",
    "etl_reduce",
    "exact_medians",
    "file_partials",
    "finish",
    "load_stats",
    "normalise",
    "pack",
    "partials",
    "run_etl",
    "stats",
    "stats_reduce",
    "to_results",
    "unpack",
]

log = logging.getLogger(__name__)

_MONEY = (
    "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge",
    "total_amount", "congestion_surcharge", "airport_fee", "cbd_congestion_fee",
)  # fmt: skip

#: The one schema every era is read as: TLC's 2022 yellow-trip schema plus the 2025 CBD fee.
SCHEMA = pa.schema(
    [
        ("VendorID", pa.int64()),
        ("tpep_pickup_datetime", pa.timestamp("us")),  # naive, as TLC writes them (NYC time)
        ("tpep_dropoff_datetime", pa.timestamp("us")),
        ("passenger_count", pa.float64()),
        ("trip_distance", pa.float64()),
        ("RatecodeID", pa.float64()),
        ("store_and_fwd_flag", pa.string()),
        ("PULocationID", pa.int64()),
        ("DOLocationID", pa.int64()),
        ("payment_type", pa.int64()),
        *((name, pa.float64()) for name in _MONEY),
    ]
)
#: Columns a file may lack (null when absent): the CBD congestion fee exists from 2025 on.
OPTIONAL = frozenset({"cbd_congestion_fee"})
#: The ETL output: the normalised rows plus the run's processing time (the EMR job's column).
ETL_TIMESTAMP = "current_date"
ETL_SCHEMA = SCHEMA.append(pa.field(ETL_TIMESTAMP, pa.timestamp("us", tz="UTC")))

_DAY_US = 86_400_000_000
_BATCH_ROWS = 1 << 18  # rows decoded at a time: bounds memory (and beats 2**20 on speed)
_READ_BLOCK = 64 << 20  # S3 read-ahead per request: few requests, bounded memory
_ROW_GROUP_ROWS = 1_000_000  # row groups of the ETL output
_PARTIAL_READERS = 16
_NULL_FLOAT = pa.scalar(None, pa.float64())


# ---------------------------------------------------------------------------------------------
# schema normalisation


class SchemaMismatch(ValueError):
    """A file's columns cannot be read as :data:`SCHEMA`: a required column is missing, a column
    is unknown or given twice, or its values do not fit the target type."""


_BY_LOWER = {field.name.lower(): field for field in SCHEMA}


def normalise(table: pa.Table, *, source: str | None = None) -> pa.Table:
    """``table`` (any era's yellow-trip columns) as :data:`SCHEMA`, columns in its order.

    Names match case-insensitively (2023+ spells ``Airport_fee``); integers widen to int64,
    counts stored as integers (2023+ ``passenger_count``, ``RatecodeID``) become float64,
    ``large_string``/dictionary strings become string, timestamps of any unit become
    ``timestamp[us]`` (time-zone-aware ones keep their UTC wall time), and a missing optional
    column (:data:`OPTIONAL`) is null. Anything else raises :class:`SchemaMismatch` naming
    ``source`` and the column. Casts are safe: a fractional id or a sub-microsecond time fails.

    >>> raw = _example().rename_columns({"airport_fee": "Airport_fee"})
    >>> normalise(raw).schema == SCHEMA, normalise(raw)["airport_fee"].to_pylist()
    (True, [1.0, 2.0])
    >>> normalise(raw.drop_columns(["fare_amount"]), source="a.parquet")
    Traceback (most recent call last):
    workers.taxi.SchemaMismatch: a.parquet: missing required column(s) fare_amount
    """
    where = source or "<table>"
    columns = []
    for field, name in _column_plan(table.schema, where):
        if name is None:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        try:
            columns.append(table[name].cast(field.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaMismatch(
                f"{where}: column {name!r} ({table.schema.field(name).type}) does not fit "
                f"{field.type}: {exc}"
            ) from exc
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def describe_drift(schema: pa.Schema) -> list[str]:
    """What :func:`normalise` changes for a file of ``schema``, one phrase per change.

    >>> describe_drift(_example().rename_columns({"airport_fee": "Airport_fee"}).schema)
    ['Airport_fee -> airport_fee', 'cbd_congestion_fee added (null)']
    """
    found = {name.lower(): name for name in schema.names}
    changes = []
    for field in SCHEMA:
        name = found.get(field.name.lower())
        if name is None:
            changes.append(f"{field.name} added (null)")
            continue
        if name != field.name:
            changes.append(f"{name} -> {field.name}")
        kind = schema.field(name).type
        if kind != field.type:
            changes.append(f"{field.name} {kind} -> {field.type}")
    return changes


def check_schema(schema: pa.Schema, *, source: str | None = None) -> None:
    """Raise :class:`SchemaMismatch` unless a file of ``schema`` can be normalised (checked
    from the footer, before any data is read)."""
    _column_plan(schema, source or "<table>")


def _column_plan(schema: pa.Schema, where: str) -> list[tuple[pa.Field, str | None]]:
    """Target field -> the file's column (None: absent, filled with nulls)."""
    by_lower: dict[str, list[str]] = defaultdict(list)
    for name in schema.names:
        by_lower[name.lower()].append(name)
    problems = []
    missing = [f.name for f in SCHEMA if f.name.lower() not in by_lower and f.name not in OPTIONAL]
    if missing:
        problems.append(f"missing required column(s) {', '.join(missing)}")
    unknown = [name for name in schema.names if name.lower() not in _BY_LOWER]
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}")
    twice = [" and ".join(names) for names in by_lower.values() if len(names) > 1]
    if twice:
        problems.append(f"column(s) given twice: {'; '.join(twice)}")
    for name in schema.names:
        target = _BY_LOWER.get(name.lower())
        if target is not None and not _castable(schema.field(name).type, target.type):
            problems.append(f"column {name!r} is {schema.field(name).type}, not {target.type}")
    if problems:
        raise SchemaMismatch(f"{where}: {'; '.join(problems)}")
    return [(field, (by_lower.get(field.name.lower()) or [None])[0]) for field in SCHEMA]


def _castable(given: pa.DataType, target: pa.DataType) -> bool:
    if pa.types.is_null(given) or given == target:
        return True
    if pa.types.is_dictionary(given):
        given = given.value_type
    if pa.types.is_timestamp(target):
        return pa.types.is_timestamp(given)
    if pa.types.is_string(target):
        return any(
            check(given)
            for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
        )
    return pa.types.is_integer(given) or pa.types.is_floating(given)


# ---------------------------------------------------------------------------------------------
# partial aggregates: additive, so any split of the rows combines to the same totals

#: Each partial's group keys; every other column is a sum or a count, combined by summing.
KEYS: dict[str, tuple[str, ...]] = {
    "daily": ("pickup_date",),
    "zones": ("PULocationID",),
    "payments": ("payment_type",),
    "durations": ("VendorID", "pickup_hour", "duration_us"),  # a histogram: count per value
    "identity": (),
}


def partials(table: pa.Table) -> dict[str, pa.Table]:
    """The partial aggregates of one normalised table (a batch, a file, anything).

    Averages travel as (sum, count) pairs and the median as a histogram of exact durations
    (whole microseconds, counted per VendorID and pickup hour), so partials of disjoint rows
    combine exactly (:func:`combine`); floats are float64 sums.
    """
    return {
        "daily": _daily(table),
        "zones": _aggregate(
            table.select(["PULocationID", "trip_distance"]),
            KEYS["zones"],
            {"trip_distance_sum": ("trip_distance", "sum")},
        ),
        "payments": _payments(table),
        "durations": _duration_histogram(table),
        "identity": _identity(table),
    }


def _daily(table: pa.Table) -> pa.Table:
    columns = {name: table[name] for name in ("total_amount", "trip_distance", "fare_amount")}
    dated = pa.table(
        {"pickup_date": pc.cast(table["tpep_pickup_datetime"], pa.date32()), **columns}
    )
    return _aggregate(
        dated,
        KEYS["daily"],
        {
            "trips": ([], "count_all"),
            "total_amount_sum": ("total_amount", "sum"),
            "trip_distance_sum": ("trip_distance", "sum"),
            "trip_distance_n": ("trip_distance", "count"),
            "fare_amount_sum": ("fare_amount", "sum"),
            "fare_amount_n": ("fare_amount", "count"),
        },
    )


def _payments(table: pa.Table) -> pa.Table:
    fare, tip = table["fare_amount"], table["tip_amount"]
    # The ratio only where the fare is positive: null elsewhere, so the average skips it.
    ratio = pc.if_else(pc.greater(fare, 0.0), pc.divide(tip, fare), _NULL_FLOAT)
    return _aggregate(
        pa.table({"payment_type": table["payment_type"], "tip_amount": tip, "ratio": ratio}),
        KEYS["payments"],
        {
            "trips": ([], "count_all"),
            "tip_amount_sum": ("tip_amount", "sum"),
            "tip_ratio_sum": ("ratio", "sum"),
            "tip_ratio_n": ("ratio", "count"),
        },
    )


def _duration_histogram(table: pa.Table) -> pa.Table:
    pickup = table["tpep_pickup_datetime"]
    micros = pc.subtract(
        pc.cast(table["tpep_dropoff_datetime"], pa.int64()), pc.cast(pickup, pa.int64())
    )
    kept = pc.fill_null(pc.and_(pc.greater(micros, 0), pc.less(micros, _DAY_US)), False)
    return _histogram(
        table["VendorID"].filter(kept),
        pc.hour(pickup).filter(kept).to_numpy(),
        micros.filter(kept).to_numpy(),
    )[0]


def _identity(table: pa.Table) -> pa.Table:
    columns: dict[str, pa.Array] = {
        "rows": pa.array([table.num_rows], pa.int64()),
        "total_amount_sum": pa.array([pc.sum(table["total_amount"]).as_py()], pa.float64()),
        "fare_amount_sum": pa.array([pc.sum(table["fare_amount"]).as_py()], pa.float64()),
    }
    for name in SCHEMA.names:
        columns[f"nulls_{name}"] = pa.array([table[name].null_count], pa.int64())
    return pa.table(columns)


def _aggregate(
    table: pa.Table, keys: tuple[str, ...], named: Mapping[str, tuple[Any, str]]
) -> pa.Table:
    """``table.group_by(keys)`` with each aggregate named as given. Null keys are groups of
    their own (as in SQL's GROUP BY); ``sum`` of nothing but nulls is null, as in SQL."""
    # Single-threaded: the groups and float sums come out the same on every run.
    grouped = table.group_by(list(keys), use_threads=False).aggregate(
        [(column, function) for column, function in named.values()]
    )
    produced = [
        "count_all" if column == [] else f"{column}_{function}"
        for column, function in named.values()
    ]
    return grouped.select([*keys, *produced]).rename_columns([*keys, *named])


def combine(parts: Iterable[Mapping[str, pa.Table]]) -> dict[str, pa.Table]:
    """Partials of disjoint rows, combined into the partials of all of them (sums summed by key).

    >>> one = partials(normalise(_example()))
    >>> both = combine([one, one])
    >>> both["identity"]["rows"].to_pylist(), both["daily"]["trips"].to_pylist()
    ([4], [4])
    """
    gathered: dict[str, list[pa.Table]] = defaultdict(list)
    for part in parts:
        for kind, table in part.items():
            gathered[kind].append(table)
    combined = {}
    for kind, tables in gathered.items():
        table = pa.concat_tables(tables)
        combined[kind] = (
            _merge_histogram(table)[0] if kind == "durations" else _sum_by(table, KEYS[kind])
        )
    return combined


def _sum_by(table: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    values = [name for name in table.column_names if name not in keys]
    return _aggregate(table, keys, {name: (name, "sum") for name in values})


# The duration histogram is the one large partial (up to a row per distinct duration and key),
# so it is merged by sorting one int64 key rather than by hashing three columns: the vendor's
# rank (0 for null, then ascending), the hour and the duration, packed as
# ((rank * 24 + hour) << 37) | duration_us. A duration under 24 h needs 37 bits.
_DURATION_BITS = 37
_DURATION_MASK = (1 << _DURATION_BITS) - 1


def _histogram(
    vendor: pa.Array | pa.ChunkedArray,
    hour: np.ndarray,
    micros: np.ndarray,
    counts: np.ndarray | None = None,
) -> tuple[pa.Table, np.ndarray]:
    """Counts per (VendorID, pickup_hour, duration_us) sorted by VendorID (null first), hour
    and duration, one row per distinct triple; and each row's group (its vendor and hour)."""
    ranks, vendors = _vendor_ranks(vendor)
    key = ((ranks * 24 + hour.astype(np.int64)) << _DURATION_BITS) | micros.astype(np.int64)
    if counts is None:
        key, counts = np.unique(key, return_counts=True)
    else:
        order = np.argsort(key, kind="stable")
        key, counts = key[order], counts[order]
        starts = _starts(key)
        key, counts = key[starts], np.add.reduceat(counts, starts) if len(key) else counts
    group = key >> _DURATION_BITS
    table = pa.table(
        {
            "VendorID": vendors.take(pa.array(group // 24)),
            "pickup_hour": pa.array(group % 24, pa.int64()),
            "duration_us": pa.array(key & _DURATION_MASK, pa.int64()),
            "trips": pa.array(counts, pa.int64()),
        }
    )
    return table, group


def _vendor_ranks(vendor: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Each row's vendor as its rank among the distinct vendors (0 = null, then ascending),
    and the vendor of each rank."""
    if isinstance(vendor, pa.ChunkedArray):
        vendor = vendor.combine_chunks()
    encoded = pc.dictionary_encode(vendor.cast(pa.int64()))
    distinct = encoded.dictionary
    order = np.argsort(distinct.to_numpy(), kind="stable")
    rank = np.empty(len(order) + 1, dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    rank[-1] = 0  # index -1: a null vendor
    indices = pc.fill_null(encoded.indices.cast(pa.int64()), -1).to_numpy()
    vendors = pa.concat_arrays([pa.nulls(1, pa.int64()), distinct.take(pa.array(order))])
    return rank[indices], vendors


def _starts(key: np.ndarray) -> np.ndarray:
    """Where a run of equal values begins in sorted ``key``."""
    if not len(key):
        return np.array([], dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))


def _merge_histogram(histogram: pa.Table) -> tuple[pa.Table, np.ndarray]:
    return _histogram(
        histogram["VendorID"],
        histogram["pickup_hour"].to_numpy(),
        histogram["duration_us"].to_numpy(),
        histogram["trips"].to_numpy(),
    )


def exact_medians(histogram: pa.Table) -> pa.Table:
    """Per (VendorID, pickup_hour): ``trips``, ``duration_avg_s`` and the exact
    ``duration_median_s`` from a histogram of ``duration_us`` values with counts in ``trips``
    (rows may repeat a key and value: partials of several files, concatenated).

    The median is the middle value of the merged counts, or the mean of the two middle values
    for an even count (Spark's ``median``). Sorted by VendorID (null first), then hour.

    >>> histogram = pa.table({"VendorID": [1, 1, 1], "pickup_hour": [0, 0, 0],
    ...                       "duration_us": [1_000_000, 3_000_000, 1_000_000],
    ...                       "trips": [1, 2, 1]})
    >>> exact_medians(histogram).to_pylist()[0]["duration_median_s"]
    2.0
    """
    merged, group = _merge_histogram(histogram)
    starts = _starts(group)
    count = merged["trips"].to_numpy()
    value = merged["duration_us"].to_numpy()
    if not len(starts):
        return _empty_durations()
    trips = np.add.reduceat(count, starts)
    ends = np.cumsum(count)  # one past each value's last copy, in key order
    before = ends[starts] - count[starts]
    lower = np.searchsorted(ends, before + (trips - 1) // 2, side="right")
    upper = np.searchsorted(ends, before + trips // 2, side="right")
    # Whole seconds and the microseconds apart, so the sums stay exact in int64.
    seconds, micros = np.divmod(value, 1_000_000)
    total = np.add.reduceat(seconds * count, starts) + np.add.reduceat(micros * count, starts) / 1e6
    first = pa.array(starts)
    return pa.table(
        {
            "VendorID": merged["VendorID"].take(first),
            "pickup_hour": merged["pickup_hour"].take(first),
            "trips": pa.array(trips, pa.int64()),
            "duration_avg_s": pa.array(total / trips, pa.float64()),
            "duration_median_s": pa.array((value[lower] + value[upper]) / 2e6, pa.float64()),
        }
    )


def _empty_durations() -> pa.Table:
    return pa.table(
        {
            "VendorID": pa.array([], pa.int64()),
            "pickup_hour": pa.array([], pa.int64()),
            "trips": pa.array([], pa.int64()),
            "duration_avg_s": pa.array([], pa.float64()),
            "duration_median_s": pa.array([], pa.float64()),
        }
    )


def finish(merged: Mapping[str, pa.Table]) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """The five results from the combined partials of the whole dataset: four tables in the
    columns and order of :data:`workers.taxi_results.COLUMNS`, and the identity dict."""
    daily, zones, payments = merged["daily"], merged["zones"], merged["payments"]
    tables = {
        "daily": _sorted(
            pa.table(
                {
                    "pickup_date": daily["pickup_date"],
                    "trips": daily["trips"],
                    "total_amount_sum": daily["total_amount_sum"],
                    "trip_distance_avg": _mean(
                        daily["trip_distance_sum"], daily["trip_distance_n"]
                    ),
                    "fare_amount_avg": _mean(daily["fare_amount_sum"], daily["fare_amount_n"]),
                }
            ),
            "pickup_date",
        ),
        "top_zones": _top_zones(zones, 10),
        "payment_mix": _sorted(
            pa.table(
                {
                    "payment_type": payments["payment_type"],
                    "trips": payments["trips"],
                    "tip_amount_sum": payments["tip_amount_sum"],
                    "tip_ratio_avg": _mean(payments["tip_ratio_sum"], payments["tip_ratio_n"]),
                }
            ),
            "payment_type",
        ),
        "durations": exact_medians(merged["durations"]),
    }
    return tables, _identity_dict(merged["identity"])


def _mean(total: pa.ChunkedArray, count: pa.ChunkedArray) -> pa.ChunkedArray:
    """sum / count, null where nothing was counted (SQL's avg of no values)."""
    ratio = pc.divide(total, pc.cast(count, pa.float64()))
    return pc.if_else(pc.greater(count, 0), ratio, _NULL_FLOAT)


def _sorted(table: pa.Table, key: str) -> pa.Table:
    return table.take(pc.sort_indices(table, [(key, "ascending", "at_start")]))


def _top_zones(zones: pa.Table, count: int) -> pa.Table:
    """Largest sum first (a null sum last, as SQL's DESC), ties by the smaller id (null first)."""
    keys = [
        ("trip_distance_sum", "descending", "at_end"),
        ("PULocationID", "ascending", "at_start"),
    ]
    top = zones.take(pc.sort_indices(zones, sort_keys=keys)[:count])
    return top.select(["PULocationID", "trip_distance_sum"])


def _identity_dict(identity: pa.Table) -> dict[str, Any]:
    row = identity.to_pylist()[0] if identity.num_rows else {}
    return {
        "rows": row.get("rows") or 0,
        "nulls": {name: row.get(f"nulls_{name}") or 0 for name in SCHEMA.names},
        "total_amount_sum": row.get("total_amount_sum"),
        "fare_amount_sum": row.get("fare_amount_sum"),
    }


def pack(parts: Mapping[str, pa.Table]) -> pa.Table:
    """A file's partials as one one-row table (a list-of-struct column per kind): one object
    to write and read per input file, whatever the number of kinds."""
    columns = {}
    for kind in KEYS:
        values = parts[kind].to_struct_array().combine_chunks()
        offsets = pa.array([0, len(values)], pa.int32())
        columns[kind] = pa.ListArray.from_arrays(offsets, values)
    return pa.table(columns)


def unpack(table: pa.Table) -> dict[str, pa.Table]:
    """The partials :func:`pack` packed."""
    return {
        kind: pa.Table.from_struct_array(table[kind].combine_chunks().flatten()) for kind in KEYS
    }


def _example() -> pa.Table:
    """Two rows of the 2022 schema, for the doctests."""
    moments = [datetime(2022, 3, 1, 8), datetime(2022, 3, 1, 9)]
    return pa.table(
        {
            "VendorID": [1, 2],
            "tpep_pickup_datetime": pa.array(moments, pa.timestamp("us")),
            "tpep_dropoff_datetime": pa.array(
                [m.replace(minute=15) for m in moments], pa.timestamp("us")
            ),
            "passenger_count": [1.0, None],
            "trip_distance": [2.5, 1.0],
            "RatecodeID": [1.0, None],
            "store_and_fwd_flag": ["N", None],
            "PULocationID": [237, 161],
            "DOLocationID": [236, 237],
            "payment_type": [1, 2],
            **{name: [1.0, 2.0] for name in _MONEY if name != "cbd_congestion_fee"},
        }
    )


# ---------------------------------------------------------------------------------------------
# settings and storage


@dataclass(frozen=True)
class Settings:
    """The workloads' settings, from ``ItemBatcher.BatchInput`` (see the pipelines)."""

    dest: str  # Dest: where taxi/ goes, usually $$.Shardmap.Destination
    source: str | None = None  # Source: where listed keys live (stats), what to read (ETL)
    parts: tuple[int, ...] = ()  # Parts (ETL): [0, 1, ..., N-1], one item each
    processed_at: str | None = None  # ProcessedAt (ETL): ISO time for current_date
    default_source: str | None = None  # DefaultSource: the source when Source is null

    _KEYS = {"Dest": "dest", "Source": "source", "Parts": "parts", "ProcessedAt": "processed_at",
             "DefaultSource": "default_source"}  # fmt: skip

    @classmethod
    def from_batch_input(cls, batch_input: Any, dest: str | None = None) -> Settings:
        """Validate BatchInput; an unknown key is an error (a typo must not go unnoticed).

        >>> Settings.from_batch_input({"Dest": "s3://b/out/"}).root
        's3://b/out/taxi'
        """
        given = dict(batch_input or {})
        unknown = sorted(set(given) - set(cls._KEYS))
        if unknown:
            raise ValueError(
                f"unknown taxi BatchInput setting(s) {unknown}; known: {list(cls._KEYS)}"
            )
        values = {cls._KEYS[name]: value for name, value in given.items()}
        values["dest"] = values.get("dest") or dest
        if not values["dest"]:
            raise ValueError("taxi needs BatchInput.Dest (Dest.$: $$.Shardmap.Destination)")
        values["dest"] = location_url(values["dest"]).rstrip("/")
        values["source"] = values.get("source") or values.get("default_source")
        parts = values.get("parts") or []
        if parts and list(parts) != list(range(len(parts))):
            raise ValueError(f"Parts must be [0, 1, ..., N-1], not {parts}")
        values["parts"] = tuple(parts)
        if values.get("processed_at"):
            datetime.fromisoformat(values["processed_at"])  # a bad time fails at once
        return cls(**values)

    @property
    def root(self) -> str:
        return f"{self.dest}/taxi"


def _fs(url: str) -> tuple[Any, str]:
    return fsspec.core.url_to_fs(url)


@contextlib.contextmanager
def _atomic_write(url: str) -> Iterator[BinaryIO]:
    """Write an object whole or not at all: S3 publishes a (multipart) upload when it is
    completed; a local file is written beside its target, then renamed over it."""
    fs, path = _fs(url)
    if url.startswith("s3://"):
        # Not committed on close: a writer that fails half-way must not publish half a file.
        stream = fs.open(path, "wb", autocommit=False)
        try:
            yield stream
            stream.close()
            stream.commit()
        except BaseException:
            stream.discard()
            raise
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.partial-{uuid.uuid4().hex}"
    try:
        with open(partial, "wb") as stream:
            yield stream
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)


def _write_parquet(url: str, table: pa.Table) -> None:
    with _atomic_write(url) as stream:
        pq.write_table(table, stream, compression="zstd")


def _write_json(url: str, value: Any) -> None:
    with _atomic_write(url) as stream:
        stream.write(json.dumps(value, indent=2, default=str).encode())


def _read_parquet(url: str) -> pa.Table:
    fs, path = _fs(url)
    with fs.open(path, "rb") as stream:
        return pq.read_table(stream)


def _why_skip(key: str, url: str, settings: Settings) -> str | None:
    if url.startswith(settings.root + "/"):
        return "under the destination: taxi/ outputs are not inputs"
    if not key.lower().endswith((".parquet", ".pq")):
        return "not a .parquet object"
    return None


@contextlib.contextmanager
def _parquet_file(url: str, etag: str | None = None, size: int | None = None) -> Iterator[Any]:
    """The listed version of ``url`` opened for streaming reads (footer first, then batches)."""
    fs, path = _fs(url)
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise WorkerError("Taxi.SourceChanged", f"{url} is gone since it was listed") from exc
    found = bare_etag(info.get("ETag"))
    # S3 reports the ETag the listing gave (multipart ones too); a folder has none: its size.
    changed = (etag and found and found != bare_etag(etag)) or (
        size is not None and info.get("size") != size
    )
    if changed:
        raise WorkerError("Taxi.SourceChanged", f"{url} is not the listed version {etag}")
    with fs.open(path, "rb", block_size=_READ_BLOCK) as stream:
        try:
            parquet = pq.ParquetFile(stream)
        except (pa.ArrowInvalid, OSError) as exc:
            raise WorkerError("Taxi.BadFile", f"{url} is not readable Parquet: {exc}") from exc
        yield parquet


def _checked_schema(parquet: Any, url: str) -> None:
    try:
        check_schema(parquet.schema_arrow, source=url)
    except SchemaMismatch as exc:
        raise WorkerError("Taxi.BadSchema", str(exc)) from exc


def _normalised(batch: pa.RecordBatch | pa.Table, url: str) -> pa.Table:
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    try:
        return normalise(table, source=url)
    except SchemaMismatch as exc:
        raise WorkerError("Taxi.BadSchema", str(exc)) from exc


# ---------------------------------------------------------------------------------------------
# stats: the map step


def stats(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Partial aggregates of yellow-trip Parquet files (one listing item per file).

    Returns one entry per item: ``key``, ``etag``, ``rows``, ``row_groups``, ``normalised``
    (the schema changes applied) and ``partial`` (the object holding its partials); or
    ``skipped`` with the reason for a key that is not a Parquet file or lies under ``taxi/``.
    """
    settings = Settings.from_batch_input(event.get("BatchInput"))
    items = event.get("Items", [event])
    return [_file_stats(item, settings) for item in items]


def _file_stats(item: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    key, etag = item["Key"], bare_etag(item.get("Etag"))
    source = item.get("Source") or settings.source
    if not source:
        raise ValueError("taxi-stats needs item.Source (ItemSelector) or BatchInput.Source")
    url = object_url(source, key)
    entry: dict[str, Any] = {"key": key, "etag": etag, "url": url}
    skipped = _why_skip(key, url, settings)
    if skipped:
        return {**entry, "skipped": skipped}
    parts, info = file_partials(url, etag=etag, size=item.get("Size"))
    target = partial_url(settings, key, etag)
    _write_parquet(target, pack(parts))
    return {**entry, **info, "partial": target}


def partial_url(settings: Settings, key: str, etag: str) -> str:
    """The partials of one source version: named by its ETag (a rerun writes the same object)
    plus a digest of its key (two keys with equal content stay apart)."""
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return f"{settings.root}/partials/{bare_etag(etag) or 'noetag'}-{digest}.parquet"


def file_partials(
    url: str, *, etag: str | None = None, size: int | None = None
) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """One file's partials, read ``2**18`` rows at a time, and what was read: ``rows``,
    ``row_groups``, ``normalised`` (the drift fixed). Memory: one compressed row group plus one
    decoded batch, whatever the file size."""
    with _parquet_file(url, etag, size) as parquet:
        _checked_schema(parquet, url)
        merged = partials(normalise(parquet.schema_arrow.empty_table()))
        for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, use_threads=False):
            merged = combine([merged, partials(_normalised(batch, url))])
        info = {
            "rows": parquet.metadata.num_rows,
            "row_groups": parquet.metadata.num_row_groups,
            "normalised": describe_drift(parquet.schema_arrow),
        }
    return merged, info


# ---------------------------------------------------------------------------------------------
# stats: the reduce step


def stats_reduce(context: ReduceContext) -> dict[str, Any]:
    """Combine the run's partials into the five results, written under {Dest}/taxi/stats/.

    ``_stats.json`` is written last. Returns a summary: files, rows, skipped keys, the stats
    folder and its objects.
    """
    settings = Settings.from_batch_input(context.batch_input, dest=context.destination)
    files, skipped = _stats_entries(context.outputs())
    merged = _merge_partials([entry["partial"] for entry in files])
    tables, identity = finish(merged)
    expected = sum(entry["rows"] for entry in files)
    if identity["rows"] != expected:  # a partial overwritten since the map step
        raise RuntimeError(
            f"the partials hold {identity['rows']} rows but the map step read {expected}; "
            "another run wrote to the same destination: rerun the pipeline"
        )
    folder = f"{settings.root}/stats"
    outputs = {name: f"{folder}/{name}.parquet" for name in tables}
    for name, table in tables.items():
        _write_parquet(outputs[name], table)
    outputs["identity"] = f"{folder}/identity.json"
    _write_json(outputs["identity"], identity)
    summary = {
        "stats": folder,
        "files": len(files),
        "rows": identity["rows"],
        "skipped": skipped,
        "days": tables["daily"].num_rows,
        "outputs": outputs,
    }
    marker = {**summary, "run_id": context.run_id, "source": context.source,
              "written_at": datetime.now(UTC).isoformat(),
              "inputs": [{k: e[k] for k in ("key", "etag", "rows")} for e in files]}  # fmt: skip
    _write_json(f"{folder}/_stats.json", marker)  # last: the stats are complete
    log.info("taxi stats: %d rows of %d files -> %s", identity["rows"], len(files), folder)
    return summary


def _stats_entries(outputs: Iterable[Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The files the run read (each partial once: a redrive may report a file again)."""
    files: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for output in outputs:
        for entry in output:
            if "skipped" in entry:
                skipped.append(entry["key"])
            else:
                files[entry["partial"]] = entry
    return sorted(files.values(), key=lambda e: e["key"]), sorted(set(skipped))


def _merge_partials(urls: list[str], group: int = _PARTIAL_READERS) -> dict[str, pa.Table]:
    """Read partials ``group`` at a time in parallel and fold them in, so the driver holds one
    group plus the running total (histograms are the large part)."""
    merged = partials(SCHEMA.empty_table())
    with ThreadPoolExecutor(_PARTIAL_READERS) as pool:
        for start in range(0, len(urls), group):
            read = pool.map(lambda url: unpack(_read_parquet(url)), urls[start : start + group])
            merged = combine([merged, *read])
    return merged


# ---------------------------------------------------------------------------------------------
# stats: loading and the Python API

_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype()}


def load_stats(stats_url: str) -> TaxiResults:
    """The results :func:`stats_reduce` wrote under ``stats_url`` (``{Dest}/taxi/stats``), with
    the dtypes of :mod:`workers.taxi_results` (``Int64`` integers, float64, ``date`` objects).

    >>> results = load_stats("taxi-results/taxi/stats")  # doctest: +SKIP
    """
    folder = location_url(stats_url).rstrip("/")
    tables = {name: _read_parquet(f"{folder}/{name}.parquet") for name in COLUMNS}
    fs, path = _fs(f"{folder}/identity.json")
    with fs.open(path, "rb") as stream:
        identity = json.load(stream)
    return to_results(tables, identity)


def to_results(tables: Mapping[str, pa.Table], identity: dict[str, Any]) -> TaxiResults:
    """:func:`finish`'s tables and identity as :class:`TaxiResults` (pandas, contract dtypes).

    >>> to_results(*finish(partials(normalise(_example())))).daily["trips"].tolist()
    [2]
    """
    frames = {
        name: tables[name].select(columns).to_pandas(types_mapper=_PANDAS_TYPES.get)
        for name, columns in COLUMNS.items()
    }
    return TaxiResults(**frames, identity=identity)


def _pipeline(name: str) -> MapSpec:
    with resources.as_file(resources.files("pipelines") / name) as path:
        return MapSpec.load(str(path))


def compute_stats(
    source_url: str, dest_url: str, *, executor: str = "threads", **run_options: Any
) -> TaxiResults:
    """Run ``pipelines/taxi-stats.yaml`` over the Parquet files under ``source_url`` and load
    the results its reduce step wrote under ``{dest_url}/taxi/stats``.

    ``run_options`` go to :func:`runner.run` (``state_dir``, ``journal``, ...). A run that fails
    (a bad file, a failed reduce) raises :class:`runner.RunFailed`.

    >>> results = compute_stats("taxi-data", "taxi-results", executor="processes")  # doctest: +SKIP
    """
    result = run(
        _pipeline("taxi-stats.yaml"), source=source_url, dest=dest_url, executor=executor,
        **run_options,
    )  # fmt: skip
    _raise_unless_succeeded(result)
    return load_stats(result.reduce.output["stats"])


def _raise_unless_succeeded(result: Any) -> None:
    if result.succeeded:
        return
    if result.reduce is not None and not result.reduce.succeeded:
        raise RunFailed(result.reduce.error or "Reduce", result.reduce.cause or "", result)
    cause = result.cause or ""
    failure = _first_failure(result.manifest_url)
    if failure:  # the run's error is a threshold; say which batch crossed it and why
        cause = f"{cause}; first failed batch: {failure}"
    raise RunFailed(result.error or str(result.status), cause, result)


def _first_failure(manifest_url: str | None) -> str | None:
    if not manifest_url:
        return None
    for _, record in iter_result_records(manifest_url):
        if isinstance(record, dict) and record.get("Status") == "FAILED":  # not ABORTED
            return f"{record.get('Error')}: {record.get('Cause')}"
    return None


# ---------------------------------------------------------------------------------------------
# ETL: the map step writes the N parts, the reduce checks them


@dataclass(frozen=True)
class _Input:
    """One source file as planned: where it is, which version, its row groups' sizes."""

    key: str
    url: str
    etag: str
    size: int
    row_groups: tuple[int, ...]

    @property
    def rows(self) -> int:
        return sum(self.row_groups)


_PART = re.compile(r"part-(\d{5})-of-(\d{5})\.parquet$")


def part_url(settings: Settings, part: int, parts: int) -> str:
    """Part ``part`` of ``parts``: a fixed name, so a rerun overwrites it."""
    return f"{settings.root}/etl/part-{part:05d}-of-{parts:05d}.parquet"


def etl(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Write ETL output parts: the source's rows normalised, plus ``current_date``.

    An item is a part number ``j`` of ``Parts`` = ``[0, ..., N-1]``: part ``j`` holds rows
    ``j*R//N`` to ``(j+1)*R//N`` of the ``R`` source rows in listing order (key order, then row
    order). Every worker plans the same cut from the listing and the footers; the plan's
    fingerprint goes into the output so the reduce step can check they all agreed.
    """
    settings = Settings.from_batch_input(event.get("BatchInput"))
    if not settings.parts or not settings.source:
        raise ValueError(
            "taxi-etl needs BatchInput.Parts ([0, ..., N-1]) and a source (shardmap run "
            "pipelines/taxi-etl.yaml --source URL, or BatchInput.DefaultSource)"
        )
    processed_at = (
        datetime.fromisoformat(settings.processed_at) if settings.processed_at else
        datetime.now(UTC)
    )  # fmt: skip
    inputs = plan_inputs(settings.source, settings)
    items = event.get("Items", [event])
    return [_write_part(inputs, int(part), settings, processed_at) for part in items]


def plan_inputs(source: str, settings: Settings) -> list[_Input]:
    """The source's Parquet files in key order with their row groups (footers only)."""
    with ThreadPoolExecutor(_PARTIAL_READERS) as pool:
        return list(pool.map(_footer, _listed(source, settings)))


def _listed(source: str, settings: Settings) -> list[tuple[str, str, str, int]]:
    """(key, url, etag, size) of the Parquet files under ``source`` (a folder, a prefix or one
    file), in key order: S3's listing order, which the parts' row numbers follow."""
    base = location_url(source).rstrip("/")
    fs, root = _fs(base)
    if not fs.isdir(root):
        info = fs.info(root)
        return [(root.rsplit("/", 1)[-1], base, bare_etag(info.get("ETag")), int(info["size"]))]
    listed = []
    for path, info in sorted(fs.find(root, detail=True).items()):
        key = path[len(root) + 1 :]
        url = f"{base}/{key}"
        if info.get("type") == "file" and not _why_skip(key, url, settings):
            listed.append((key, url, bare_etag(info.get("ETag")), int(info["size"])))
    return listed


def _footer(entry: tuple[str, str, str, int]) -> _Input:
    key, url, etag, size = entry
    with _parquet_file(url, etag or None, size) as parquet:
        _checked_schema(parquet, url)
        meta = parquet.metadata
        groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    return _Input(key, url, etag, size, groups)


def plan_fingerprint(inputs: list[_Input]) -> str:
    """What every part's worker must agree on: each file's key, version and row groups."""
    text = json.dumps([[i.key, i.etag, i.size, list(i.row_groups)] for i in inputs])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_part(
    inputs: list[_Input], part: int, settings: Settings, processed_at: datetime
) -> dict[str, Any]:
    parts = len(settings.parts)
    if part not in settings.parts:
        raise ValueError(f"part {part} is not one of Parts {list(settings.parts)}")
    total = sum(i.rows for i in inputs)
    first, stop = part * total // parts, (part + 1) * total // parts
    url = part_url(settings, part, parts)
    stamp = pa.scalar(processed_at, ETL_SCHEMA.field(ETL_TIMESTAMP).type)
    written = 0
    with _atomic_write(url) as sink, pq.ParquetWriter(sink, ETL_SCHEMA, compression="zstd") as out:
        pending: list[pa.Table] = []
        for piece in _row_range(inputs, first, stop):
            pending.append(piece.append_column(ETL_TIMESTAMP, pa.repeat(stamp, piece.num_rows)))
            if sum(t.num_rows for t in pending) >= _ROW_GROUP_ROWS:
                written += _flush(out, pending)
        written += _flush(out, pending)
    return {
        "part": part,
        "parts": parts,
        "url": url,
        "rows": written,
        "first_row": first,
        "plan": plan_fingerprint(inputs),
        "plan_rows": total,
        "processed_at": processed_at.isoformat(),
    }


def _flush(out: pq.ParquetWriter, pending: list[pa.Table]) -> int:
    """Write what is pending as one row group (slices of input row groups, merged back to
    about a million rows)."""
    if not pending:
        return 0
    table = pa.concat_tables(pending)
    out.write_table(table, row_group_size=max(table.num_rows, 1))
    pending.clear()
    return table.num_rows


def _row_range(inputs: list[_Input], first: int, stop: int) -> Iterator[pa.Table]:
    """Rows ``first`` to ``stop`` of the inputs, normalised, one row group slice at a time:
    only the row groups that overlap the range are read."""
    start = 0
    for item in inputs:
        if start >= stop:
            return
        if start + item.rows > first:
            yield from _file_range(item, start, first, stop)
        start += item.rows


def _file_range(item: _Input, start: int, first: int, stop: int) -> Iterator[pa.Table]:
    with _parquet_file(item.url, item.etag or None, item.size) as parquet:
        group_start = start
        for index, rows in enumerate(item.row_groups):
            lo, hi = max(first, group_start), min(stop, group_start + rows)
            if lo < hi:
                group = parquet.read_row_group(index, use_threads=False)
                yield _normalised(group.slice(lo - group_start, hi - lo), item.url)
            group_start += rows


def etl_reduce(context: ReduceContext) -> dict[str, Any]:
    """Check the ETL wrote exactly N parts holding every row; log the count; write the manifest.

    Parts of an earlier run with another N are removed first; ``_manifest.json`` is last.
    """
    settings = Settings.from_batch_input(context.batch_input, dest=context.destination)
    parts = len(settings.parts)
    reported = {entry["part"]: entry for output in context.outputs() for entry in output}
    _check_parts(reported, parts)
    folder = f"{settings.root}/etl"
    expected = {part_url(settings, j, parts) for j in range(parts)}
    removed = _remove_stale_parts(folder, expected)
    rows = _rows_in(sorted(expected))
    plan_rows = reported[0]["plan_rows"]
    if rows != plan_rows:
        raise RuntimeError(f"the {parts} parts hold {rows} rows, the source {plan_rows}")
    log.info("Total number of records: %d", rows)  # what the EMR job logs
    summary = {
        "rows": rows,
        "files": parts,
        "output": folder,
        "parts": sorted(expected),
        "removed": removed,
        "processed_at": sorted({e["processed_at"] for e in reported.values()}),
    }
    manifest = {
        **summary,
        "run_id": context.run_id,
        "source": context.source,
        "plan": reported[0]["plan"],
        "written_at": datetime.now(UTC).isoformat(),
    }
    _write_json(f"{folder}/_manifest.json", manifest)
    return summary


def _check_parts(reported: Mapping[int, Mapping[str, Any]], parts: int) -> None:
    missing = sorted(set(range(parts)) - set(reported))
    if missing:
        raise RuntimeError(f"parts {missing} of {parts} were not written")
    plans = {entry["plan"] for entry in reported.values()}
    if len(plans) != 1:  # the source changed while the parts were written
        raise RuntimeError(f"the parts were cut from different listings ({sorted(plans)}): rerun")


def _remove_stale_parts(folder: str, expected: set[str]) -> list[str]:
    """Delete ``part-*-of-*.parquet`` objects that are not this run's (an earlier run with
    another N); nothing else in the folder is touched."""
    fs, path = _fs(folder)
    if not fs.exists(path):
        return []
    removed = []
    for name in sorted(fs.ls(path, detail=False)):
        url = f"{folder}/{name.rsplit('/', 1)[-1]}"
        if _PART.search(url) and url not in expected:
            fs.rm(name)
            removed.append(url)
    return removed


def _rows_in(urls: list[str]) -> int:
    """Rows of the written parts, from their footers; a missing part is an error."""

    def rows(url: str) -> int:
        fs, path = _fs(url)
        with fs.open(path, "rb") as stream:
            return pq.ParquetFile(stream).metadata.num_rows

    with ThreadPoolExecutor(_PARTIAL_READERS) as pool:
        return sum(pool.map(rows, urls))


def run_etl(
    source_url: str, dest_url: str, *, files: int, executor: str = "threads", **run_options: Any
) -> dict[str, Any]:
    """Run ``pipelines/taxi-etl.yaml``: the rows under ``source_url``, normalised and stamped
    with one processing time, written as exactly ``files`` Parquet files under
    ``{dest_url}/taxi/etl/``. Returns the reduce step's summary (rows, files, parts).

    >>> run_etl("taxi-data", "taxi-results", files=4)["files"]  # doctest: +SKIP
    4
    """
    if files < 1:
        raise ValueError(f"files must be at least 1, not {files}")
    data = _pipeline("taxi-etl.yaml").to_dict()
    batch_input = data["ItemBatcher"]["BatchInput"]
    # One processing time for the whole run, as the EMR job's lit(datetime.now()).
    batch_input["ProcessedAt"] = datetime.now(UTC).isoformat()
    result = run(
        MapSpec.from_dict(data), source=source_url, dest=dest_url, executor=executor,
        run_input={"Parts": list(range(files))}, **run_options,
    )  # fmt: skip
    _raise_unless_succeeded(result)
    output: dict[str, Any] = result.reduce.output
    return output
