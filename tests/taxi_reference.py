"""The five taxi aggregations of ``workers/taxi_results.py`` in PySpark and in DuckDB: references
that share no code with ``workers/taxi.py``, for the tests and ``bench/taxi.py``.

Both engines read each Parquet file by itself (the eras' schemas differ), cast and rename its
columns onto the normalised schema (TLC's 2022 yellow-trip schema plus ``cbd_congestion_fee``,
null before 2025), union the files and run the same five SQL queries. They read local files
only: a remote URL (``s3://...``) is first copied with fsspec to a temporary folder, removed
when the results are in, so neither engine needs s3a jars or DuckDB's httpfs extension (which
cannot be installed offline). The copy goes through fsspec's own credentials and endpoint (the
``AWS_*`` variables), like shardmap's reads.

Check the references against each other and against plain pandas (exit code 1 on a
difference); ``--synthetic`` first writes a small dataset of all three eras with nulls, dirty
rows and medians of odd and even counts into DIR::

    .venv/bin/python tests/taxi_reference.py --check DIR [--synthetic]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

if __package__ in (None, ""):  # run as a script: make `workers` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.taxi_results import COLUMNS, TaxiResults, differences

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["NORMALISED", "duckdb_results", "pandas_results", "spark_results", "spark_session"]

_MONEY = ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount",
          "improvement_surcharge", "total_amount", "congestion_surcharge", "airport_fee",
          "cbd_congestion_fee")  # fmt: skip

#: The normalised schema as (column, SQL type): Spark's type names; DuckDB's are mapped below.
NORMALISED: list[tuple[str, str]] = [
    ("VendorID", "BIGINT"),
    ("tpep_pickup_datetime", "TIMESTAMP_NTZ"),  # naive wall time, as TLC writes it
    ("tpep_dropoff_datetime", "TIMESTAMP_NTZ"),
    ("passenger_count", "DOUBLE"),
    ("trip_distance", "DOUBLE"),
    ("RatecodeID", "DOUBLE"),
    ("store_and_fwd_flag", "STRING"),
    ("PULocationID", "BIGINT"),
    ("DOLocationID", "BIGINT"),
    ("payment_type", "BIGINT"),
    *((name, "DOUBLE") for name in _MONEY),
]
#: Columns a file may lack (read as null): the CBD congestion fee exists from 2025 on.
_OPTIONAL = {"cbd_congestion_fee"}
# DuckDB's TIMESTAMP is naive (Spark's TIMESTAMP is an instant shown in the session time zone).
_DUCKDB_TYPES = {"TIMESTAMP_NTZ": "TIMESTAMP", "STRING": "VARCHAR"}
_DAY_US = 86_400_000_000

# The queries, shared by both dialects; {us} and {median} are the dialect's duration in
# microseconds and exact median. Explicit NULLS FIRST/LAST: DuckDB's default is NULLS LAST for
# ascending order, Spark's NULLS FIRST. Durations stay integral microseconds until the
# aggregate (both engines sum BIGINT exactly), then become seconds; 1e6 is a DOUBLE literal in
# both (Spark reads 1000000.0 as a DECIMAL).
_QUERIES = {
    "daily": """
        SELECT CAST(tpep_pickup_datetime AS DATE) AS pickup_date, COUNT(*) AS trips,
               SUM(total_amount) AS total_amount_sum, AVG(trip_distance) AS trip_distance_avg,
               AVG(fare_amount) AS fare_amount_avg
        FROM trips GROUP BY 1 ORDER BY 1 NULLS FIRST""",
    "top_zones": """
        SELECT PULocationID, SUM(trip_distance) AS trip_distance_sum
        FROM trips GROUP BY 1
        ORDER BY trip_distance_sum DESC NULLS LAST, PULocationID ASC NULLS FIRST LIMIT 10""",
    "payment_mix": """
        SELECT payment_type, COUNT(*) AS trips, SUM(tip_amount) AS tip_amount_sum,
               AVG(CASE WHEN fare_amount > 0 THEN tip_amount / fare_amount END) AS tip_ratio_avg
        FROM trips GROUP BY 1 ORDER BY 1 NULLS FIRST""",
    "durations": f"""
        SELECT VendorID, pickup_hour, COUNT(*) AS trips, AVG(us) / 1e6 AS duration_avg_s,
               {{median}} / 1e6 AS duration_median_s
        FROM (SELECT VendorID, CAST(hour(tpep_pickup_datetime) AS BIGINT) AS pickup_hour,
                     {{us}} AS us FROM trips) AS timed
        WHERE us > 0 AND us < {_DAY_US}
        GROUP BY 1, 2 ORDER BY 1 NULLS FIRST, 2 NULLS FIRST""",
    "identity": f"""
        SELECT COUNT(*) AS n_rows, SUM(total_amount) AS total_amount_sum,
               SUM(fare_amount) AS fare_amount_sum,
               {", ".join(f"COUNT(*) - COUNT({name}) AS nulls_{name}" for name, _ in NORMALISED)}
        FROM trips""",
}
_SPARK_SQL = {
    "us": "unix_micros(CAST(tpep_dropoff_datetime AS TIMESTAMP))"
    " - unix_micros(CAST(tpep_pickup_datetime AS TIMESTAMP))",
    "median": "percentile(us, 0.5)",  # exact: the mean of the two middle values when even
}
_DUCKDB_SQL = {
    "us": "epoch_us(tpep_dropoff_datetime) - epoch_us(tpep_pickup_datetime)",
    "median": "quantile_cont(us, 0.5)",  # exact, interpolating as Spark's percentile
}


# ---------------------------------------------------------------------------------------------
# shared: local copies, per-file column plans, converting the query results


@contextlib.contextmanager
def local_copies(paths: list[str]) -> Iterator[list[str]]:
    """``paths`` as local files: remote URLs copied with fsspec into a temporary folder (removed
    on exit), local paths and ``file://`` URLs as they are."""
    import fsspec

    with tempfile.TemporaryDirectory(prefix="taxi-reference-") as folder:
        local = []
        for number, path in enumerate(paths):
            if path.startswith("file://") or "://" not in path:
                local.append(path.removeprefix("file://"))
                continue
            fs, remote = fsspec.core.url_to_fs(path)
            # Numbered: two prefixes may hold the same file name.
            target = os.path.join(folder, f"{number:05d}-{os.path.basename(remote)}")
            fs.get(remote, target)
            local.append(target)
        yield local


def column_plan(names: list[str], source: str) -> list[tuple[str, str, str | None]]:
    """(target column, SQL type, the file's column or None when absent) for each column of the
    normalised schema. Names match case-insensitively (2023+ writes ``Airport_fee``)."""
    by_lower = {name.lower(): name for name in names}
    plan = []
    for target, kind in NORMALISED:
        found = by_lower.get(target.lower())
        if found is None and target not in _OPTIONAL:
            raise ValueError(f"{source}: no column {target!r} (columns: {names})")
        plan.append((target, kind, found))
    return plan


def _to_results(tables: dict[str, pa.Table]) -> TaxiResults:
    """Arrow query results as the contract's pandas frames and identity dict."""
    # int64 (and the int32 some engines give counts) -> nullable Int64; date32 -> date objects.
    integers = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype()}
    frames = {
        name: tables[name].select(columns).to_pandas(types_mapper=integers.get)
        for name, columns in COLUMNS.items()
    }
    (row,) = tables["identity"].to_pylist()
    identity = {
        "rows": int(row["n_rows"]),
        "nulls": {name: int(row[f"nulls_{name}"]) for name, _ in NORMALISED},
        "total_amount_sum": row["total_amount_sum"],
        "fare_amount_sum": row["fare_amount_sum"],
    }
    return TaxiResults(**frames, identity=identity)


# ---------------------------------------------------------------------------------------------
# PySpark


def spark_session(*, memory: str = "4g", partitions: int = 4) -> SparkSession:
    """A quiet local[2] session with the UTC session time zone (so naive timestamps keep their
    wall-clock dates and hours), no UI and few shuffle partitions (small results)."""
    from pyspark.sql import SparkSession

    quiet = Path(tempfile.gettempdir()) / "taxi-reference-log4j2.properties"
    quiet.write_text("rootLogger.level = error\nrootLogger.appenderRef.stderr.ref = console\n"
                     "appender.console.type = Console\nappender.console.name = console\n"
                     "appender.console.target = SYSTEM_ERR\n"
                     "appender.console.layout.type = PatternLayout\n"
                     "appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n\n")  # fmt: skip
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("taxi-reference")
        .config("spark.driver.memory", memory)  # read by the JVM launcher: before it starts
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{quiet}")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    with warnings.catch_warnings():
        # PySpark 4 warns once that it "does not yet fully support pandas >= 3"; we convert
        # through Arrow ourselves, and the warning would fail tests run with -W error.
        warnings.simplefilter("ignore", FutureWarning)
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_results(paths: list[str], spark: SparkSession) -> TaxiResults:
    """The five results over the yellow-trip Parquet files ``paths`` (local or remote), by
    PySpark: each file read and normalised by itself, the files unioned, five queries.

    >>> spark_results(["taxi-data/yellow_tripdata_2023-06.parquet"], spark)  # doctest: +SKIP
    """
    with local_copies(paths) as local:
        trips = reduce(lambda a, b: a.unionByName(b), [_spark_file(spark, p) for p in local])
        tables = {}
        for name, query in _QUERIES.items():
            # {trips} is the DataFrame as a subquery (PySpark formats it): no shared temp view.
            text = query.replace("FROM trips", "FROM {trips}").format(trips="{trips}", **_SPARK_SQL)
            tables[name] = spark.sql(text, trips=trips).toArrow()
    return _to_results(tables)


def _spark_file(spark: SparkSession, path: str) -> DataFrame:
    from pyspark.sql import functions as F

    # Spark 4 reads Parquet timestamps without a time zone as TIMESTAMP_NTZ; a tz-aware file's
    # TIMESTAMP cast to NTZ in the UTC session keeps its UTC wall time, as normalise() does.
    frame = spark.read.parquet(path)
    return frame.select(
        *(
            (F.col(f"`{found}`") if found else F.lit(None)).cast(kind.lower()).alias(target)
            for target, kind, found in column_plan(frame.columns, path)
        )
    )


# ---------------------------------------------------------------------------------------------
# DuckDB


def duckdb_results(paths: list[str], *, threads: int = 2) -> TaxiResults:
    """The five results over the yellow-trip Parquet files ``paths`` (local or remote), by
    DuckDB with ``threads`` threads: a view normalising each file, unioned, five queries.

    >>> duckdb_results(["taxi-data/yellow_tripdata_2023-06.parquet"]).daily  # doctest: +SKIP
    """
    import duckdb

    with local_copies(paths) as local, duckdb.connect(config={"threads": threads}) as con:
        con.execute("SET TimeZone = 'UTC'")  # a tz-aware file's times cast to their UTC wall time
        selects = [_duckdb_select(con, path) for path in local]
        con.execute("CREATE TEMP VIEW trips AS " + "\nUNION ALL\n".join(selects))
        tables = {
            name: con.sql(query.format(**_DUCKDB_SQL)).to_arrow_table()
            for name, query in _QUERIES.items()
        }
    return _to_results(tables)


def _duckdb_select(con: Any, path: str) -> str:
    source = "read_parquet('{}')".format(path.replace("'", "''"))
    names = con.sql(f"SELECT * FROM {source} LIMIT 0").columns
    columns = []
    for target, kind, found in column_plan(names, path):
        value = f'"{found}"' if found else "NULL"
        columns.append(f"CAST({value} AS {_DUCKDB_TYPES.get(kind, kind)}) AS {target}")
    return f"SELECT {', '.join(columns)} FROM {source}"


# ---------------------------------------------------------------------------------------------
# plain pandas: the check's third opinion (small data only: everything in memory)


def pandas_results(paths: list[str]) -> TaxiResults:
    """The five results by pandas, for :func:`check` (loads every row)."""
    trips = pd.concat([_pandas_file(path) for path in paths], ignore_index=True)
    pickup, dropoff = trips["tpep_pickup_datetime"], trips["tpep_dropoff_datetime"]
    trips["pickup_date"] = pickup.dt.date.where(pickup.notna(), None)
    trips["ratio"] = (trips["tip_amount"] / trips["fare_amount"]).where(trips["fare_amount"] > 0)
    micros = (dropoff - pickup) / pd.Timedelta(microseconds=1)  # float, exact below 2**53 us
    kept = trips.assign(pickup_hour=pickup.dt.hour.astype("Int64"), us=micros)
    kept = kept[(kept["us"] > 0) & (kept["us"] < _DAY_US)]
    daily = _by(trips, "pickup_date", trips=("VendorID", "size"),
                total_amount_sum=("total_amount", _sum),
                trip_distance_avg=("trip_distance", "mean"),
                fare_amount_avg=("fare_amount", "mean"))  # fmt: skip
    zones = _by(trips, "PULocationID", trip_distance_sum=("trip_distance", _sum))
    # na_position is one for all keys: a null sum goes last, so a null id is put first by hand.
    zones = zones.assign(known=zones["PULocationID"].notna()).sort_values(
        ["trip_distance_sum", "known", "PULocationID"], ascending=[False, True, True],
        na_position="last", kind="stable",
    )  # fmt: skip
    payment = _by(trips, "payment_type", trips=("VendorID", "size"),
                  tip_amount_sum=("tip_amount", _sum), tip_ratio_avg=("ratio", "mean"))  # fmt: skip
    durations = _by(kept, ["VendorID", "pickup_hour"], trips=("us", "size"),
                    duration_avg_s=("us", lambda s: s.mean() / 1e6),
                    duration_median_s=("us", lambda s: s.median() / 1e6))  # fmt: skip
    frames = {"daily": daily, "top_zones": zones.head(10), "payment_mix": payment,
              "durations": durations}  # fmt: skip
    identity = {
        "rows": len(trips),
        "nulls": {name: int(trips[name].isna().sum()) for name, _ in NORMALISED},
        "total_amount_sum": _sum(trips["total_amount"]),
        "fare_amount_sum": _sum(trips["fare_amount"]),
    }
    return TaxiResults(
        **{name: _typed(frames[name], columns) for name, columns in COLUMNS.items()},
        identity=identity,
    )


def _pandas_file(path: str) -> pd.DataFrame:
    table = pq.read_table(path)
    arrow = {"BIGINT": pa.int64(), "TIMESTAMP_NTZ": pa.timestamp("us"), "DOUBLE": pa.float64(),
             "STRING": pa.string()}  # fmt: skip
    columns = {}
    for target, kind, found in column_plan(table.column_names, path):
        column = table[found] if found else pa.nulls(len(table))
        columns[target] = column.cast(arrow[kind]).to_pandas(
            types_mapper={pa.int64(): pd.Int64Dtype()}.get
        )
    return pd.DataFrame(columns)


def _sum(values: pd.Series) -> float:
    """SQL's SUM: null when there is nothing but nulls."""
    return values.sum(min_count=1)


def _by(frame: pd.DataFrame, keys: str | list[str], **named: Any) -> pd.DataFrame:
    grouped = frame.groupby(keys, dropna=False, sort=False).agg(**named).reset_index()
    return grouped.sort_values(keys, na_position="first", kind="stable")


def _typed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    frame = frame[columns].reset_index(drop=True)
    for name in columns:
        if name in ("trips", "pickup_hour", "VendorID", "PULocationID", "payment_type"):
            frame[name] = frame[name].astype("Int64")
        elif name != "pickup_date":
            frame[name] = frame[name].astype("float64")
    return frame


# ---------------------------------------------------------------------------------------------
# the check and its synthetic data


def check(folder: str, *, synthetic: bool = False) -> list[str]:
    """Spark, DuckDB and pandas over the Parquet files in ``folder`` (first written by
    :func:`write_synthetic` when ``synthetic``); every difference, prefixed by the pair."""
    if synthetic:
        write_synthetic(folder)
    paths = sorted(str(path) for path in Path(folder).glob("*.parquet"))
    if not paths:
        raise SystemExit(f"no .parquet files in {folder}")
    spark = spark_session()
    try:
        ours = {"spark": spark_results(paths, spark), "duckdb": duckdb_results(paths)}
    finally:
        spark.stop()
    ours["pandas"] = pandas_results(paths)
    spark_side = ours["spark"]
    print(f"{len(paths)} files, {spark_side.identity['rows']} rows, {len(spark_side.daily)} days, "
          f"{len(spark_side.durations)} duration groups")  # fmt: skip
    found = []
    for left, right in (("spark", "duckdb"), ("spark", "pandas"), ("duckdb", "pandas")):
        pair = differences(ours[left], ours[right], rel=1e-9)
        print(f"differences({left}, {right}): {pair if pair else 'none'}")
        found += [f"{left}/{right}: {line}" for line in pair]
    return found


def write_synthetic(folder: str, *, rows: int = 600, seed: int = 11) -> list[str]:
    """Three small files, one per schema era, of random trips plus planted edge cases: null
    keys and times, refunds, zero fares, durations of 0, < 0, exactly and over 24 h and under a
    second, microsecond times around midnight, a 2002 pickup, tied zones."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for year, month in ((2022, 3), (2023, 6), (2025, 2)):
        trips = _random_trips(rng, year, month, rows) + _edge_trips(year, month)
        path = os.path.join(folder, f"yellow_tripdata_{year}-{month:02d}.parquet")
        pq.write_table(pa.Table.from_pylist(trips, schema=_era_schema(year)), path)
        written.append(path)
    return written


def _era_schema(year: int) -> pa.Schema:
    """2022: int64 ids, double counts; 2023: int32 ids, ``Airport_fee``; 2025: as 2023 plus
    ``cbd_congestion_fee``, int64 counts, large strings, microsecond timestamps."""
    ids = pa.int64() if year < 2023 else pa.int32()
    counts = pa.int64() if year >= 2025 else pa.float64()
    fields = [
        ("VendorID", ids),
        ("tpep_pickup_datetime", pa.timestamp("us")),
        ("tpep_dropoff_datetime", pa.timestamp("us")),
        ("passenger_count", counts),
        ("trip_distance", pa.float64()),
        ("RatecodeID", counts),
        ("store_and_fwd_flag", pa.large_string() if year >= 2025 else pa.string()),
        ("PULocationID", ids),
        ("DOLocationID", ids),
        ("payment_type", pa.int64()),
        *((name, pa.float64()) for name in _MONEY[:-2]),
        ("airport_fee" if year < 2023 else "Airport_fee", pa.float64()),
    ]
    if year >= 2025:
        fields.append(("cbd_congestion_fee", pa.float64()))
    return pa.schema(fields)


def _trip(year: int, pickup: datetime | None, seconds: float | None, **values: Any) -> dict:
    """One row in the era's column names; ``seconds`` after pickup is the dropoff."""
    dropoff = None if pickup is None or seconds is None else pickup + timedelta(seconds=seconds)
    row = {"VendorID": 1, "tpep_pickup_datetime": pickup, "tpep_dropoff_datetime": dropoff,
           "passenger_count": 1, "trip_distance": 2.0, "RatecodeID": 1, "store_and_fwd_flag": "N",
           "PULocationID": 161, "DOLocationID": 237, "payment_type": 1, "fare_amount": 10.0,
           "extra": 0.5, "mta_tax": 0.5, "tip_amount": 2.0, "tolls_amount": 0.0,
           "improvement_surcharge": 1.0, "total_amount": 16.5, "congestion_surcharge": 2.5,
           "airport_fee": 0.0}  # fmt: skip
    row.update(values)
    if year >= 2023:
        row["Airport_fee"] = row.pop("airport_fee")
    if year >= 2025:
        row.setdefault("cbd_congestion_fee", 0.75)
    elif "cbd_congestion_fee" in row:
        raise ValueError("no cbd_congestion_fee before 2025")
    return row


def _random_trips(rng: np.random.Generator, year: int, month: int, rows: int) -> list[dict]:
    """Few vendors, hours and days, so groups are small and of both parities."""
    trips = []
    for _ in range(rows):
        pickup = datetime(year, month, int(rng.integers(1, 4)), int(rng.integers(0, 3)),
                          int(rng.integers(0, 60)), int(rng.integers(0, 60)),
                          int(rng.integers(0, 1_000_000)) if rng.random() < 0.3 else 0)  # fmt: skip
        seconds = float(rng.choice([rng.integers(1, 3600), rng.integers(-50, 50),
                                    rng.integers(1, 10**6) / 1e6, 86_400, 90_000]))  # fmt: skip
        fare = float(rng.choice([rng.integers(-20, 60) / 4, 0.0]))
        maybe = {name: None for name in ("passenger_count", "RatecodeID", "store_and_fwd_flag",
                                         "congestion_surcharge", "airport_fee")
                 if rng.random() < 0.1}  # fmt: skip
        trips.append(_trip(
            year, pickup, seconds, **maybe,
            VendorID=rng.choice([1, 2, None], p=[0.45, 0.45, 0.1]),
            PULocationID=rng.choice([*range(1, 16), None]),
            payment_type=rng.choice([0, 1, 2, 3, None]),
            trip_distance=None if rng.random() < 0.05 else float(rng.integers(0, 80) / 8),
            fare_amount=None if rng.random() < 0.05 else fare,
            tip_amount=None if rng.random() < 0.05 else float(rng.integers(0, 40) / 4),
            total_amount=None if rng.random() < 0.05 else fare + 4.5,
        ))  # fmt: skip
    return [{k: v.item() if isinstance(v, np.generic) else v for k, v in t.items()} for t in trips]


def _edge_trips(year: int, month: int) -> list[dict]:
    start = datetime(year, month, 1)
    midnight = start + timedelta(days=1) - timedelta(microseconds=1)
    later = start + timedelta(days=20)
    return [
        _trip(year, None, None, VendorID=None),  # no times at all
        _trip(year, start, None),  # no dropoff
        _trip(year, midnight, 0.000002),  # ends the next day, counted on the pickup's date
        _trip(year, midnight, 0),  # zero duration: dropped
        _trip(year, midnight, 86_400 - 1e-6),  # just under 24 h: kept
        _trip(year, datetime(2002, 12, 31, 23), 600, VendorID=7),  # TLC's stray years
        # Two zones of equal, largest sums: the smaller id first, whatever the file order.
        _trip(year, start, 60, PULocationID=902, trip_distance=500.0),
        _trip(year, start, 60, PULocationID=901, trip_distance=250.0),
        _trip(year, start, 60, PULocationID=901, trip_distance=250.0),
        # A payment type whose fares are never positive (ratio avg null), one all-null fares.
        _trip(year, start, 60, payment_type=5, fare_amount=0.0),
        _trip(year, start, 60, payment_type=5, fare_amount=-3.0),
        _trip(year, start, 60, payment_type=6, fare_amount=None, total_amount=None),
        # A day with nothing but null distances, fares and totals (avgs and sums null).
        _trip(year, later, 60, trip_distance=None, fare_amount=None, total_amount=None),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", metavar="DIR", required=True,
                        help="a folder of yellow-trip Parquet files")  # fmt: skip
    parser.add_argument("--synthetic", action="store_true",
                        help="first write the small synthetic dataset into DIR")  # fmt: skip
    args = parser.parse_args()
    found = check(args.check, synthetic=args.synthetic)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
