"""The five taxi-trip aggregations as one comparable value, whoever computed them.

shardmap (local or Dask), PySpark and DuckDB each produce a :class:`TaxiResults`; the tests and
the benchmark compare them with :func:`differences`. The shapes are fixed here so that every
engine is held to the same definitions:

``daily``
    by pickup date (UTC): ``pickup_date`` (``datetime.date``), ``trips`` (count of rows),
    ``total_amount_sum``, ``trip_distance_avg``, ``fare_amount_avg`` (nulls ignored, as SQL
    aggregates do); sorted by ``pickup_date``.
``top_zones``
    ``PULocationID``, ``trip_distance_sum``: the ten zones with the largest sum, ties broken by
    the smaller id; sorted that way. A null zone is a group like any other.
``payment_mix``
    by ``payment_type`` (a null type is its own group): ``trips``, ``tip_amount_sum``,
    ``tip_ratio_avg`` = avg(tip_amount / fare_amount) over rows with fare_amount > 0 (null when
    there are none); sorted by ``payment_type``, null first.
``durations``
    by ``VendorID`` and ``pickup_hour`` (0-23) over trips with 0 s < dropoff - pickup < 24 h:
    ``trips``, ``duration_avg_s``, ``duration_median_s`` (exact: the mean of the two middle
    values when the count is even, as Spark's ``median`` / ``percentile(x, 0.5)``); sorted by
    ``VendorID`` (null first), then hour.
``identity``
    ``{"rows": int, "nulls": {column: int, ...}, "total_amount_sum": float,
    "fare_amount_sum": float}`` over every column of the normalised schema.

Sort keys with nulls compare null first. Integer columns are pandas nullable ``Int64``, floats
``float64`` (NaN for null).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["COLUMNS", "TaxiResults", "differences"]

COLUMNS: dict[str, list[str]] = {
    "daily": ["pickup_date", "trips", "total_amount_sum", "trip_distance_avg", "fare_amount_avg"],
    "top_zones": ["PULocationID", "trip_distance_sum"],
    "payment_mix": ["payment_type", "trips", "tip_amount_sum", "tip_ratio_avg"],
    "durations": ["VendorID", "pickup_hour", "trips", "duration_avg_s", "duration_median_s"],
}


@dataclass
class TaxiResults:
    daily: pd.DataFrame
    top_zones: pd.DataFrame
    payment_mix: pd.DataFrame
    durations: pd.DataFrame
    identity: dict[str, Any] = field(default_factory=dict)


def differences(a: TaxiResults, b: TaxiResults, *, rel: float = 1e-9) -> list[str]:
    """Every way ``a`` and ``b`` differ (empty when they agree): exact for keys and counts,
    within relative tolerance ``rel`` for float sums and averages."""
    found: list[str] = []
    for name, columns in COLUMNS.items():
        left, right = getattr(a, name), getattr(b, name)
        if list(left.columns) != columns or list(right.columns) != columns:
            found.append(f"{name}: columns {list(left.columns)} / {list(right.columns)}")
            continue
        if len(left) != len(right):
            found.append(f"{name}: {len(left)} rows / {len(right)} rows")
            continue
        for column in columns:
            for row, (x, y) in enumerate(zip(left[column], right[column], strict=True)):
                if not _same(x, y, rel):
                    found.append(f"{name}[{row}].{column}: {x!r} / {y!r}")
    found += _identity_differences(a.identity, b.identity, rel)
    return found


def _identity_differences(a: dict[str, Any], b: dict[str, Any], rel: float) -> list[str]:
    found = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            found += [f"identity.{key}.{k}: {x.get(k)!r} / {y.get(k)!r}"
                      for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]  # fmt: skip
        elif not _same(x, y, rel):
            found.append(f"identity.{key}: {x!r} / {y!r}")
    return found


def _same(x: Any, y: Any, rel: float) -> bool:
    if _is_null(x) or _is_null(y):
        return _is_null(x) and _is_null(y)
    if isinstance(x, float) or isinstance(y, float):
        return math.isclose(float(x), float(y), rel_tol=rel, abs_tol=1e-9)
    return bool(x == y)


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)
