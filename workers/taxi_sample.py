"""Seeded NYC TLC yellow-trip Parquet in every schema era: ``shardmap sample taxi DEST_URL``.

Writes ``yellow_tripdata_YYYY-MM.parquet`` per month (``yellow_tripdata_YYYY-MM-NN.parquet``
when a month has more than :data:`FILE_ROWS` rows), in the schema TLC used that year:

- up to 2022: int64 ids, ``passenger_count``/``RatecodeID`` double, ``airport_fee``;
- 2023-2024: int32 ``VendorID``/``PULocationID``/``DOLocationID``, int64 ``passenger_count``
  and ``RatecodeID``, ``Airport_fee`` capitalised;
- 2025 on: as 2023, plus ``cbd_congestion_fee``, strings as ``large_string``.

Distributions are shaped like the real data: trip distance lognormal, fares from distance and
time, tips mostly on card payments, 265 zones with a skewed popularity (airports included),
VendorID 1/2 (6 and 7 in 2025), payment_type 0-6. About 11% of rows have the null pattern of
TLC's app-dispatched trips (null ``passenger_count``, ``RatecodeID``, ``store_and_fwd_flag``,
``congestion_surcharge``, ``airport_fee``; ``payment_type`` 0). Dirty rows are planted and
counted (:data:`DIRTY`): refunds with negative amounts, pickups outside the month, dropoffs
before pickups, trips of exactly and over 24 h, zero and sub-second durations, null keys.
Timestamps are whole seconds, except 2% with random microseconds (so medians are exercised on
exact microsecond durations).

Generation is numpy-vectorised in chunks of one row group (:data:`ROW_GROUP_ROWS`), streamed to
storage: memory stays at a few chunks whatever ``count``. Each chunk has its own random
stream (seed, month, file, chunk), so the same seed writes the same bytes.
"""

from __future__ import annotations

import calendar
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "DEFAULT_COUNT",
    "DEFAULT_MONTHS",
    "DIRTY",
    "FILE_ROWS",
    "ROW_GROUP_ROWS",
    "era_schema",
    "taxi_sample",
]

DEFAULT_COUNT = 300_000
DEFAULT_MONTHS = ("2022-03", "2023-06", "2025-02")
FILE_ROWS = 2_000_000  # rows per file at most: a big month becomes several files
ROW_GROUP_ROWS = 1_000_000

#: Planted dirt, one kind per row at most, with its share of rows.
DIRTY: dict[str, float] = {
    "negative_fare": 0.01,  # a refund: every amount negated
    "outside_month": 0.003,  # pickup days before or after the file's month, or years off
    "dropoff_before_pickup": 0.002,
    "over_24h": 0.001,  # 24 h + up to two days
    "exactly_24h": 0.0003,  # excluded by the strict "< 24 h"
    "zero_duration": 0.002,  # dropoff == pickup: excluded by "> 0 s"
    "sub_second": 0.0005,  # 0 < duration < 1 s: kept
    "null_vendor": 0.001,
    "null_payment_type": 0.001,
    "null_pickup_zone": 0.001,
}
_NULL_PATTERN = 0.11  # app-dispatched trips: several columns null together
_MICROS = 0.02  # rows whose times carry microseconds

_MONEY = ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount",
          "improvement_surcharge", "total_amount", "congestion_surcharge")  # fmt: skip
_TOP_ZONES = (237, 236, 161, 132, 162, 142, 186, 170, 230, 163, 239, 68, 234, 48, 138, 141, 79,
              107, 263, 140, 238, 249, 246, 100, 164, 113, 229, 43, 90, 233)  # fmt: skip
_AIRPORTS = (132, 138)
_HOUR_WEIGHTS = np.array([2.8, 1.9, 1.3, 0.9, 0.6, 0.6, 1.4, 2.6, 3.6, 3.9, 4.0, 4.2, 4.5, 4.6,
                          4.9, 5.1, 5.3, 5.9, 6.4, 6.0, 5.3, 5.0, 4.8, 3.9])  # fmt: skip


def era_schema(year: int) -> pa.Schema:
    """The schema of TLC's yellow-trip files of ``year`` (see the module docstring)."""
    old = year < 2023
    ids = pa.int64() if old else pa.int32()
    counts = pa.float64() if old else pa.int64()
    text = pa.large_string() if year >= 2025 else pa.string()
    fields = [
        ("VendorID", ids),
        ("tpep_pickup_datetime", pa.timestamp("us")),
        ("tpep_dropoff_datetime", pa.timestamp("us")),
        ("passenger_count", counts),
        ("trip_distance", pa.float64()),
        ("RatecodeID", counts),
        ("store_and_fwd_flag", text),
        ("PULocationID", ids),
        ("DOLocationID", ids),
        ("payment_type", pa.int64()),
        *((name, pa.float64()) for name in _MONEY),
        ("airport_fee" if old else "Airport_fee", pa.float64()),
    ]
    if year >= 2025:
        fields.append(("cbd_congestion_fee", pa.float64()))
    return pa.schema(fields)


@dataclass(frozen=True)
class _File:
    key: str
    year: int
    month: int
    number: int  # the file's number within its month
    rows: int


def taxi_sample(
    dest_url: str,
    *,
    count: int | None = None,
    seed: int = 7,
    months: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Write ``count`` trips (default :data:`DEFAULT_COUNT`) spread evenly over ``months``
    (``"YYYY-MM"``, default :data:`DEFAULT_MONTHS`) under ``dest_url``; the summary.

    The summary: ``objects`` (files written), ``rows``, ``files`` (key, era, rows, row groups
    each), ``dirty`` (planted rows per kind of :data:`DIRTY`), ``null_pattern`` rows and
    ``nulls`` per column of the normalised schema, all counted from what was generated.

    >>> taxi_sample("taxi-data", count=1000, months=["2023-06"])["objects"]  # doctest: +SKIP
    1
    """
    total = DEFAULT_COUNT if count is None else count
    parsed = [_month(text) for text in (months or DEFAULT_MONTHS)]
    files = _plan(total, parsed)
    fs, root = fsspec.core.url_to_fs(dest_url)
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        written = list(pool.map(lambda f: _write_file(fs, root, f, seed), files))
    dirty: Counter[str] = Counter(dict.fromkeys(DIRTY, 0))
    nulls: Counter[str] = Counter()
    for stats in written:
        dirty.update(stats["dirty"])
        nulls.update(stats["nulls"])
    return {
        "objects": len(files),
        "rows": total,
        "months": [f"{y}-{m:02d}" for y, m in parsed],
        "seed": seed,
        "files": [
            {"key": f.key, "era": _era(f.year), "rows": f.rows, "row_groups": s["row_groups"]}
            for f, s in zip(files, written, strict=True)
        ],
        "dirty": dict(dirty),
        "null_pattern": sum(s["null_pattern"] for s in written),
        "nulls": dict(nulls),
    }


def _month(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 2009:
        raise ValueError(f"a month is YYYY-MM from 2009-01 on, not {text!r}")
    return int(match.group(1)), int(match.group(2))


def _era(year: int) -> str:
    return "2022" if year < 2023 else "2023" if year < 2025 else "2025"


def _plan(total: int, months: list[tuple[int, int]]) -> list[_File]:
    """Rows per month (the remainder to the first months), split into files of FILE_ROWS."""
    files = []
    for index, (year, month) in enumerate(months):
        rows = total // len(months) + (index < total % len(months))
        pieces = max(1, -(-rows // FILE_ROWS))
        for number in range(pieces):
            share = rows // pieces + (number < rows % pieces)
            suffix = f"-{number:02d}" if pieces > 1 else ""
            key = f"yellow_tripdata_{year}-{month:02d}{suffix}.parquet"
            files.append(_File(key, year, month, number, share))
    return files


def _write_file(fs: Any, root: str, file: _File, seed: int) -> dict[str, Any]:
    schema = era_schema(file.year)
    dirty: Counter[str] = Counter()
    nulls: Counter[str] = Counter()
    pattern = groups = 0
    with fs.open(f"{root}/{file.key}", "wb") as stream, pq.ParquetWriter(stream, schema) as out:
        for chunk, start in enumerate(range(0, file.rows, ROW_GROUP_ROWS)):
            rows = min(ROW_GROUP_ROWS, file.rows - start)
            rng = np.random.default_rng([seed, file.year, file.month, file.number, chunk])
            table, kinds, null_rows = _chunk(rng, file.year, file.month, rows)
            out.write_table(table.cast(schema), row_group_size=rows)
            dirty.update(kinds)
            pattern += null_rows
            groups += 1
            for name in table.column_names:
                nulls[_normalised_name(name)] += table[name].null_count
    if file.year < 2025:
        nulls["cbd_congestion_fee"] += file.rows  # absent: null once normalised
    return {"dirty": dirty, "nulls": nulls, "null_pattern": pattern, "row_groups": groups}


def _normalised_name(name: str) -> str:
    return "airport_fee" if name == "Airport_fee" else name


def _chunk(
    rng: np.random.Generator, year: int, month: int, rows: int
) -> tuple[pa.Table, Counter[str], int]:
    """One row group of trips (in the 2022 types; the caller casts to the era's schema), the
    planted dirty rows per kind and the number of null-pattern rows."""
    names = ["clean", *DIRTY]
    shares = np.array([1 - sum(DIRTY.values()), *DIRTY.values()])
    kind = rng.choice(len(names), size=rows, p=shares)
    null_rows = rng.random(rows) < _NULL_PATTERN
    is_kind = {name: kind == number for number, name in enumerate(names)}

    vendor = _vendors(rng, year, rows)
    pickup_zone, dropoff_zone = _zones(rng, rows), _zones(rng, rows)
    distance = _distances(rng, rows, pickup_zone)
    pickup, dropoff = _times(rng, year, month, rows, distance, is_kind)
    payment = rng.choice([1, 2, 3, 4, 5, 6], size=rows, p=[0.75, 0.2, 0.012, 0.03, 0.004, 0.004])
    payment = np.where(null_rows, 0, payment)
    amounts = _amounts(rng, year, rows, distance, (dropoff - pickup) / 60e6, payment, pickup_zone)
    refund = is_kind["negative_fare"]
    for name in amounts:
        amounts[name] = np.where(refund, -amounts[name], amounts[name])

    columns: dict[str, pa.Array] = {
        "VendorID": pa.array(vendor, mask=is_kind["null_vendor"]),
        "tpep_pickup_datetime": pa.array(pickup, pa.timestamp("us")),
        "tpep_dropoff_datetime": pa.array(dropoff, pa.timestamp("us")),
        "passenger_count": pa.array(_passengers(rng, rows), pa.float64(), mask=null_rows),
        "trip_distance": pa.array(distance),
        "RatecodeID": pa.array(_ratecodes(rng, pickup_zone, dropoff_zone), pa.float64(),
                               mask=null_rows),
        "store_and_fwd_flag": pa.array(np.where(rng.random(rows) < 0.005, "Y", "N"), pa.string(),
                                       mask=null_rows),
        "PULocationID": pa.array(pickup_zone, mask=is_kind["null_pickup_zone"]),
        "DOLocationID": pa.array(dropoff_zone),
        "payment_type": pa.array(payment, mask=is_kind["null_payment_type"]),
    }  # fmt: skip
    for name in _MONEY:
        nullable = name == "congestion_surcharge"
        columns[name] = pa.array(amounts[name], mask=null_rows if nullable else None)
    columns["airport_fee" if year < 2023 else "Airport_fee"] = pa.array(
        amounts["airport_fee"], mask=null_rows
    )
    if year >= 2025:
        columns["cbd_congestion_fee"] = pa.array(amounts["cbd_congestion_fee"])
    planted = Counter({name: int(is_kind[name].sum()) for name in DIRTY})
    return pa.table(columns), planted, int(null_rows.sum())


def _vendors(rng: np.random.Generator, year: int, rows: int) -> np.ndarray:
    if year >= 2025:
        return rng.choice([1, 2, 6, 7], size=rows, p=[0.25, 0.74, 0.006, 0.004])
    return rng.choice([1, 2], size=rows, p=[0.27, 0.73])


def _zone_weights() -> tuple[np.ndarray, np.ndarray]:
    """Zones 1-265 with a Zipf-like popularity: Manhattan's busiest first, then a fixed order
    (the city, not the seed, decides which zones are busy)."""
    rest = [zone for zone in range(1, 266) if zone not in _TOP_ZONES]
    order = np.array([*_TOP_ZONES, *np.random.default_rng(265).permutation(rest)])
    weights = 1.0 / (np.arange(len(order)) + 4.0) ** 1.6
    return order, weights / weights.sum()


_ZONES, _ZONE_P = _zone_weights()


def _zones(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.choice(_ZONES, size=rows, p=_ZONE_P)


def _distances(rng: np.random.Generator, rows: int, pickup_zone: np.ndarray) -> np.ndarray:
    miles = rng.lognormal(mean=0.55, sigma=0.85, size=rows)
    airport = np.isin(pickup_zone, _AIRPORTS)
    miles = np.where(airport, rng.lognormal(mean=2.8, sigma=0.25, size=rows), miles)
    miles = np.where(rng.random(rows) < 0.015, 0.0, miles)  # meters that never ran
    return np.round(np.minimum(miles, 250.0), 2)


def _times(
    rng: np.random.Generator,
    year: int,
    month: int,
    rows: int,
    distance: np.ndarray,
    is_kind: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Pickup and dropoff as epoch microseconds (naive wall time), dirt included."""
    start = int(datetime(year, month, 1, tzinfo=UTC).timestamp())
    days = calendar.monthrange(year, month)[1]
    hour = rng.choice(24, size=rows, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    second = (
        start + rng.integers(0, days, rows) * 86_400 + hour * 3600 + rng.integers(0, 3600, rows)
    )
    second = np.where(is_kind["outside_month"], _outside(rng, start, days, rows), second)
    speed = rng.lognormal(mean=np.log(11.0), sigma=0.35, size=rows)  # mph
    duration = np.round(distance / speed * 3600 + 60 + rng.exponential(120, rows)).astype(np.int64)
    duration = np.minimum(duration, 5 * 3600)  # long clean trips stay clean: under 24 h
    duration = np.where(is_kind["dropoff_before_pickup"], -rng.integers(1, 7200, rows), duration)
    duration = np.where(is_kind["over_24h"], 86_400 + rng.integers(1, 2 * 86_400, rows), duration)
    duration = np.where(is_kind["exactly_24h"], 86_400, duration)
    duration = np.where(is_kind["zero_duration"] | is_kind["sub_second"], 0, duration)
    pickup = second * 1_000_000
    dropoff = pickup + duration * 1_000_000
    micros = (rng.random(rows) < _MICROS) & is_kind["clean"]  # planted durations stay exact
    pickup = pickup + np.where(micros, rng.integers(0, 1_000_000, rows), 0)
    dropoff = dropoff + np.where(micros, rng.integers(0, 1_000_000, rows), 0)
    dropoff = np.where(is_kind["zero_duration"], pickup, dropoff)
    return pickup, np.where(
        is_kind["sub_second"], pickup + rng.integers(1, 1_000_000, rows), dropoff
    )


def _outside(rng: np.random.Generator, start: int, days: int, rows: int) -> np.ndarray:
    """Pickups before the month, after it, or in another year altogether (TLC has 2002s)."""
    before = start - rng.integers(60, 3 * 86_400, rows)
    after = start + days * 86_400 + rng.integers(0, 2 * 86_400, rows)
    far = int(datetime(2002, 12, 31, tzinfo=UTC).timestamp()) + rng.integers(0, 86_400, rows)
    return np.select([rng.random(rows) < 0.5, rng.random(rows) < 0.7], [before, after], far)


def _amounts(
    rng: np.random.Generator,
    year: int,
    rows: int,
    distance: np.ndarray,
    minutes: np.ndarray,
    payment: np.ndarray,
    pickup_zone: np.ndarray,
) -> dict[str, np.ndarray]:
    old = year < 2023
    minutes = np.clip(minutes, 0, 180)
    fare = (2.5 if old else 3.0) + (2.5 if old else 3.5) * distance + 0.35 * minutes
    airport = np.isin(pickup_zone, _AIRPORTS)
    fare = np.where(airport & (rng.random(rows) < 0.6), 52.0 if old else 70.0, fare)
    fare = np.round(fare, 2)
    tipped = ((payment == 1) & (rng.random(rows) < 0.85)) | (
        (payment == 0) & (rng.random(rows) < 0.5)
    )
    tip = np.round(np.where(tipped, fare * rng.uniform(0.12, 0.3, rows), 0.0), 2)
    values = {
        "fare_amount": fare,
        "extra": rng.choice([0.0, 0.5, 1.0, 2.5, 3.5], size=rows, p=[0.35, 0.25, 0.2, 0.15, 0.05]),
        "mta_tax": np.full(rows, 0.5),
        "tip_amount": tip,
        "tolls_amount": np.where(rng.random(rows) < 0.06, 6.55 if old else 6.94, 0.0),
        "improvement_surcharge": np.full(rows, 0.3 if old else 1.0),
        "congestion_surcharge": np.where(rng.random(rows) < 0.92, 2.5, 0.0),
        "airport_fee": np.where(airport, 1.25 if old else 1.75, 0.0),
        "cbd_congestion_fee": np.where(rng.random(rows) < 0.7, 0.75, 0.0),
    }
    parts = [values[name] for name in values if name != "cbd_congestion_fee" or year >= 2025]
    values["total_amount"] = np.round(np.sum(parts, axis=0), 2)
    return values


def _passengers(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.choice(7, size=rows, p=[0.02, 0.72, 0.15, 0.04, 0.02, 0.03, 0.02])


def _ratecodes(rng: np.random.Generator, pickup: np.ndarray, dropoff: np.ndarray) -> np.ndarray:
    rows = len(pickup)
    code = rng.choice([1, 3, 4, 5, 99], size=rows, p=[0.975, 0.004, 0.004, 0.016, 0.001])
    return np.where((pickup == 132) | (dropoff == 132), 2, code)  # JFK: the flat fare
