"""Genomics: per-sample QC, alignment and variant calling, one sample per batch. Design and
layout: ``docs/workloads-genomics.md``.

Items are rows of ``samples.csv`` (``sample,r1,r2``: the name and its two gzipped FASTQ files,
keys relative to the manifest's folder). ``BatchInput`` carries ``Dest`` (where outputs go),
``Base`` (the manifest's URL or folder, which relative keys are joined to) and ``Reference``
(the FASTA, relative to ``Base`` unless a URL). Every step reads its inputs from and writes its
outputs to ``{Dest}/genomics/<sample>/``, so the steps chain by convention::

    genomics-qc     r1, r2                    -> qc.json
    genomics-map    r1, r2, reference         -> aligned.bam, map.json
    genomics-sort   aligned.bam               -> sorted.bam
    genomics-index  sorted.bam                -> sorted.bam.bai
    genomics-call   sorted.bam(.bai), ref     -> calls.vcf.gz, calls.vcf.gz.csi
    genomics-sample all five in one batch, without downloading what it just made

and :func:`reduce` (``genomics-reduce``) writes ``{Dest}/genomics/summary.json`` across samples.

Each step works in a temporary folder and publishes only finished files (an index after the
file it indexes), so a reader never sees half an output. Error policy:

- A FASTQ that breaks the format fails the batch with ``Genomics.BadFastq``, naming the file,
  the line, the record and the reason (:class:`BadFastq`); retrying cannot fix it.
- A manifest row or a setting that cannot work fails with ``Genomics.BadManifest`` or
  ``Genomics.InvalidBatchInput``; an input that does not exist (a read file, or the output of
  a step that has not run yet) with ``Genomics.MissingInput``. None of these is retried.
- Any other storage error propagates as it is (``OSError``, botocore's errors...), so the
  pipeline's Retry applies.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import tempfile
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import mappy
import pysam
import pysam.bcftools
from fsspec.implementations.local import LocalFileSystem

from runner.errors import WorkerError
from runner.reduce import ReduceContext
from runner.results import iter_result_records

__all__ = [
    "BAD_FASTQ",
    "BAD_MANIFEST",
    "FILES",
    "INVALID_BATCH_INPUT",
    "MAX_INSERT",
    "MISSING_INPUT",
    "STEPS",
    "BadFastq",
    "FastqRecord",
    "Sample",
    "Settings",
    "align_pairs",
    "call",
    "call_variants",
    "fastq_stats",
    "index",
    "index_bam",
    "index_fasta",
    "load_calls",
    "map_reads",
    "qc",
    "read_fastq",
    "read_pairs",
    "reduce",
    "sample",
    "sort",
    "sort_bam",
    "summarise_vcf",
]

BAD_FASTQ = "Genomics.BadFastq"
BAD_MANIFEST = "Genomics.BadManifest"
INVALID_BATCH_INPUT = "Genomics.InvalidBatchInput"
MISSING_INPUT = "Genomics.MissingInput"

#: The steps in DAG order, and what each writes under ``{Dest}/genomics/<sample>/``.
STEPS = ("qc", "map", "sort", "index", "call")
FILES: Mapping[str, tuple[str, ...]] = {
    "qc": ("qc.json",),
    "map": ("aligned.bam", "map.json"),
    "sort": ("sorted.bam",),
    "index": ("sorted.bam.bai",),
    "call": ("calls.vcf.gz", "calls.vcf.gz.csi"),
}
#: A pair counts as properly paired when its reads face each other (FR) on one contig within
#: this many bases; bcftools mpileup skips pairs without the flag (its default, no ``-A``).
MAX_INSERT = 1000
PRESET = "sr"  # minimap2's short-read preset

_SAMPLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_BASES = frozenset(b"ACGTNacgtn")
_MANIFEST_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
_GZIP_MAGIC = b"\x1f\x8b"
# samtools and bcftools run inside this process through pysam, which swaps the process's
# stdout/stderr file descriptors and getopt state around each call: two threads calling at
# once would read each other's arguments and output. The work they do here is small.
_TOOLS = threading.Lock()


# ---------------------------------------------------------------------------------------------
# errors


class BadFastq(WorkerError):
    """A FASTQ file breaks the format: ``url``, 1-based ``line`` and ``record``, ``reason``.

    >>> str(BadFastq("s3://b/x_1.fq.gz", 9, 3, "quality has 4 characters, sequence 5"))
    'Genomics.BadFastq: s3://b/x_1.fq.gz, line 9 (record 3): quality has 4 characters, sequence 5'
    """

    def __init__(self, url: str, line: int | None, record: int | None, reason: str) -> None:
        self.url, self.line, self.record, self.reason = url, line, record, reason
        where = url
        if line is not None:
            where += f", line {line}" + (f" (record {record})" if record is not None else "")
        super().__init__(BAD_FASTQ, f"{where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process and Dask boundaries
        return (type(self), (self.url, self.line, self.record, self.reason))


# ---------------------------------------------------------------------------------------------
# settings and items


@dataclass(frozen=True)
class Settings:
    """The workload's settings, from ``ItemBatcher.BatchInput`` (pipelines/genomics.yaml).

    >>> s = Settings.from_batch_input({"Dest": "out", "Base": "s3://b/data/samples.csv"})
    >>> s.base, s.reference
    ('s3://b/data', 's3://b/data/reference/lambda_virus.fa')
    """

    dest: str  # Dest: outputs go to {Dest}/genomics/
    base: str  # Base: the folder manifest keys are relative to
    reference: str  # Reference: the FASTA reads are aligned to and variants called against
    min_qual: float = 20.0  # MinQual: calls below this QUAL are kept but FILTERed LowQual

    DEFAULT_REFERENCE: ClassVar[str] = "reference/lambda_virus.fa"
    _KEYS: ClassVar[dict[str, str]] = {
        "Dest": "dest",
        "Base": "base",
        "Reference": "reference",
        "MinQual": "min_qual",
    }

    @classmethod
    def from_batch_input(cls, batch_input: Any, dest: str | None = None) -> Settings:
        """Validate BatchInput; an unknown key is an error, so a typo cannot go unnoticed."""
        given = dict(batch_input or {})
        unknown = sorted(set(given) - set(cls._KEYS))
        if unknown:
            known = ", ".join(cls._KEYS)
            raise WorkerError(INVALID_BATCH_INPUT, f"unknown BatchInput key(s) {unknown}; {known}")
        dest = given.get("Dest") or dest
        if not dest or not isinstance(dest, str):
            raise WorkerError(
                INVALID_BATCH_INPUT, "Dest is required (Dest.$: $$.Shardmap.Destination)"
            )
        base = given.get("Base")
        if not base or not isinstance(base, str):
            raise WorkerError(INVALID_BATCH_INPUT, "Base is required (Base.$: $$.Shardmap.Source)")
        base = _url(base).rstrip("/")
        if base.lower().endswith(_MANIFEST_SUFFIXES):  # the manifest itself: use its folder
            base = _parent(base)
        reference = given.get("Reference") or cls.DEFAULT_REFERENCE
        if not isinstance(reference, str):
            raise WorkerError(INVALID_BATCH_INPUT, "Reference must be a URL or a key")
        min_qual = given.get("MinQual", cls.min_qual)
        if isinstance(min_qual, bool) or not isinstance(min_qual, int | float) or min_qual < 0:
            raise WorkerError(INVALID_BATCH_INPUT, f"MinQual must be a number >= 0: {min_qual!r}")
        return cls(_url(dest).rstrip("/"), base, _join(base, reference), float(min_qual))

    @property
    def root(self) -> str:
        return f"{self.dest}/genomics"

    def folder(self, sample: str) -> str:
        return f"{self.root}/{sample}"


@dataclass(frozen=True)
class Sample:
    """One row of ``samples.csv``, its read files resolved to URLs."""

    name: str
    r1: str
    r2: str

    @classmethod
    def from_item(cls, item: Any, settings: Settings) -> Sample:
        if not isinstance(item, Mapping):
            raise WorkerError(BAD_MANIFEST, f"an item is not a samples.csv row: {item!r}")
        missing = [key for key in ("sample", "r1", "r2") if not item.get(key)]
        if missing:
            raise WorkerError(
                BAD_MANIFEST, f"samples.csv row {dict(item)!r} has no {', '.join(missing)}"
            )
        name = str(item["sample"]).strip()
        # The name becomes a folder under Dest: it may not climb out of it or hide.
        if not _SAMPLE_NAME.fullmatch(name):
            raise WorkerError(
                BAD_MANIFEST,
                f"sample name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit",
            )
        return cls(
            name,
            _join(settings.base, str(item["r1"]).strip()),
            _join(settings.base, str(item["r2"]).strip()),
        )


def _url(value: str) -> str:
    """``S3://bucket/key`` (how ``$$.Map.Item.Source`` spells S3) as an fsspec URL."""
    return "s3://" + value[5:] if value.startswith("S3://") else value


def _parent(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def _join(base: str, key: str) -> str:
    """``key`` as a URL: itself when it is one (or an absolute path), else under ``base``."""
    key = _url(key)
    if "://" in key or key.startswith("/"):
        return key
    return f"{base}/{key}"


# ---------------------------------------------------------------------------------------------
# FASTQ: a strict four-line parser, because a broken file must fail with where and why


@dataclass(frozen=True, slots=True)
class FastqRecord:
    name: str  # the header up to the first whitespace, without ``@``
    sequence: str
    quality: str  # Phred+33 characters
    line: int  # the 1-based line of the header


def read_fastq(path: str | Path, url: str | None = None) -> Iterator[FastqRecord]:
    """The records of a local FASTQ file (gzipped or plain), checked as they are read.

    Four-line records only (no wrapped sequences): ``@name``, bases (``ACGTN``, any case),
    ``+``, a Phred+33 quality of the same length. Any break raises :class:`BadFastq` naming
    ``url`` (default: the path), the line, the record and the reason.

    >>> next(read_fastq("reads_1.fq.gz")).name  # doctest: +SKIP
    'r1'
    """
    url = url or str(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if compressed else raw
        line_number = 0
        record = 0
        try:
            while True:
                header = stream.readline()
                if not header:
                    return
                line_number += 1
                if header in (b"\n", b"\r\n"):  # blank lines between or after records
                    continue
                record += 1
                start = line_number
                if not header.startswith(b"@"):
                    raise BadFastq(
                        url, start, record, f"header does not start with '@': {_show(header)}"
                    )
                lines = []
                for part in ("sequence", "'+' separator", "quality"):
                    text = stream.readline()
                    if not text:
                        raise BadFastq(
                            url, start, record, f"the file ends inside the record (no {part} line)"
                        )
                    line_number += 1
                    lines.append(text.rstrip(b"\r\n"))
                sequence, separator, quality = lines
                # The name runs to the first space or tab; "@ r1" has none.
                name = header[1:].rstrip(b"\r\n").split(b" ", 1)[0].split(b"\t", 1)[0]
                if not name:
                    raise BadFastq(url, start, record, "the header has no read name")
                bad = next((i for i, base in enumerate(sequence) if base not in _BASES), None)
                if bad is not None:
                    raise BadFastq(
                        url, start + 1, record,
                        f"sequence has {_show(sequence[bad:bad + 1])} at column {bad + 1} "
                        "(only A, C, G, T and N)",
                    )  # fmt: skip
                if not separator.startswith(b"+"):
                    raise BadFastq(
                        url,
                        start + 2,
                        record,
                        f"separator line does not start with '+': {_show(separator)}",
                    )
                if len(quality) != len(sequence):
                    raise BadFastq(
                        url, start + 3, record,
                        f"quality has {len(quality)} characters, sequence {len(sequence)}",
                    )  # fmt: skip
                if quality and (min(quality) < 33 or max(quality) > 126):
                    raise BadFastq(
                        url, start + 3, record, "quality has characters outside '!'..'~'"
                    )
                yield FastqRecord(
                    name.decode("ascii", "replace"), sequence.decode(), quality.decode(), start
                )
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            # The file was downloaded whole before parsing: this is the bytes, not the storage.
            raise BadFastq(
                url, line_number + 1, record + 1, f"the gzip stream is broken: {exc}"
            ) from exc


def _show(text: bytes) -> str:
    return repr(text.rstrip(b"\r\n")[:40].decode("ascii", "replace"))


def _mate_name(name: str) -> str:
    return name[:-2] if name.endswith(("/1", "/2")) else name


def read_pairs(
    path1: str | Path, path2: str | Path, url1: str | None = None, url2: str | None = None
) -> Iterator[tuple[FastqRecord, FastqRecord]]:
    """Mates from two FASTQ files in step; their names must agree (``/1``, ``/2`` aside) and
    the files must hold as many records, else :class:`BadFastq`."""
    url1, url2 = url1 or str(path1), url2 or str(path2)
    first, second = read_fastq(path1, url1), read_fastq(path2, url2)
    number = 0
    while True:
        one, two = next(first, None), next(second, None)
        number += 1
        if one is None and two is None:
            return
        if one is None or two is None:
            longer, url = (one, url1) if two is None else (two, url2)
            assert longer is not None
            shorter = url2 if two is None else url1
            raise BadFastq(
                url, longer.line, number, f"record {number} has no mate: {shorter} ends before it"
            )
        if _mate_name(one.name) != _mate_name(two.name):
            raise BadFastq(
                url2, two.line, number,
                f"read {two.name!r} is not the mate of {one.name!r} (record {number} of {url1})",
            )  # fmt: skip
        yield one, two


# ---------------------------------------------------------------------------------------------
# QC


@dataclass
class _Stats:
    """Running totals of one read file."""

    reads: int = 0
    bases: int = 0
    quality_sum: int = 0
    q30: int = 0
    n_bases: int = 0
    lengths: Counter[int] = field(default_factory=Counter)
    gc_bins: list[int] = field(default_factory=lambda: [0] * 101)
    gc_sum: float = 0.0
    gc_reads: int = 0

    def add(self, record: FastqRecord) -> None:
        sequence = record.sequence.encode()
        quality = record.quality.encode()
        self.reads += 1
        self.bases += len(sequence)
        self.lengths[len(sequence)] += 1
        self.quality_sum += sum(quality) - 33 * len(quality)
        self.q30 += sum(1 for q in quality if q >= 33 + 30)
        upper = sequence.upper()
        self.n_bases += upper.count(b"N")
        acgt = len(upper) - upper.count(b"N")
        if acgt:
            gc = (upper.count(b"G") + upper.count(b"C")) / acgt
            self.gc_sum += gc
            self.gc_reads += 1
            self.gc_bins[round(gc * 100)] += 1  # nearest whole percent (half to even)

    def as_dict(self, url: str) -> dict[str, Any]:
        lengths = sorted(self.lengths.items())
        return {
            "url": url,
            "reads": self.reads,
            "bases": self.bases,
            "length": {
                "min": lengths[0][0] if lengths else 0,
                "max": lengths[-1][0] if lengths else 0,
                "mean": self.bases / self.reads if self.reads else 0.0,
                "histogram": [[length, count] for length, count in lengths],
            },
            "gc": {
                "mean": 100 * self.gc_sum / self.gc_reads if self.gc_reads else None,
                "histogram": self.gc_bins,  # reads per GC percent, 0..100
            },
            "mean_quality": self.quality_sum / self.bases if self.bases else None,
            "q30_fraction": self.q30 / self.bases if self.bases else None,
            "n_fraction": self.n_bases / self.bases if self.bases else None,
        }


def fastq_stats(path: str | Path, url: str | None = None) -> dict[str, Any]:
    """QC figures of one FASTQ file.

    ``reads``, ``bases``; ``length`` min/max/mean and a histogram ``[[length, reads], ...]``;
    ``gc``: the mean per-read GC percent and reads per whole percent (0..100), GC counted over
    the read's A, C, G and T (N excluded; a read of only N has no GC); ``mean_quality``: the
    mean Phred score over all bases; ``q30_fraction`` and ``n_fraction`` of bases.
    """
    stats = _Stats()
    for record in read_fastq(path, url):
        stats.add(record)
    return stats.as_dict(url or str(path))


# ---------------------------------------------------------------------------------------------
# the workspace: local copies of inputs, finished outputs published to Dest


class _Workspace:
    """A temporary folder for one sample. Inputs are downloaded once; outputs are published
    when finished, so the all-in-one worker never downloads what it has just written."""

    def __init__(self, folder: Path, settings: Settings, sample: Sample) -> None:
        self.folder = folder
        self.settings = settings
        self.sample = sample
        self.out = settings.folder(sample.name)
        self.published: dict[str, str] = {}

    def path(self, name: str) -> Path:
        return self.folder / name

    def fetch(self, url: str, name: str, missing: str) -> Path:
        """``url`` as the local file ``name``; a missing one fails with ``missing`` as reason."""
        local = self.path(name)
        if local.exists():
            return local
        fs, path = fsspec.core.url_to_fs(url)
        try:
            fs.get(path, str(local))
        except FileNotFoundError as exc:
            local.unlink(missing_ok=True)
            raise WorkerError(MISSING_INPUT, f"{url}: no such file ({missing})") from exc
        except BaseException:
            local.unlink(missing_ok=True)
            raise
        return local

    def output(self, name: str) -> Path:
        """A step output of this sample, local, downloading it if another run wrote it."""
        earlier = next(s for s in STEPS if name in FILES[s])
        return self.fetch(f"{self.out}/{name}", name, f"run genomics-{earlier} first")

    def reads(self) -> tuple[Path, Path]:
        sample = self.sample
        listed = f"listed for sample {sample.name} in samples.csv"
        return (
            self.fetch(sample.r1, f"in_{sample.name}_1.fq" + _gz(sample.r1), listed),
            self.fetch(sample.r2, f"in_{sample.name}_2.fq" + _gz(sample.r2), listed),
        )

    def reference(self) -> Path:
        """The reference, uncompressed and indexed (faidx), as mpileup needs it."""
        local = self.path("reference.fa")
        if local.exists():
            return local
        url = self.settings.reference
        fetched = self.fetch(url, "reference.download", "BatchInput.Reference")
        with open(fetched, "rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
        if compressed:
            with gzip.open(fetched, "rb") as source, open(local, "wb") as target:
                shutil.copyfileobj(source, target)
        else:
            fetched.rename(local)
        index_fasta(local)
        return local

    def publish(self, *names: str) -> None:
        """Upload finished files in the order given (an index after the file it indexes)."""
        for name in names:
            url = f"{self.out}/{name}"
            _put(self.path(name), url)
            self.published[name] = url


def _gz(url: str) -> str:
    return ".gz" if url.endswith(".gz") else ""


def _put(local: Path, url: str) -> None:
    """Write ``local`` to ``url`` whole: an S3 PUT is atomic; a local file is renamed into place."""
    fs, path = fsspec.core.url_to_fs(url)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        staging = f"{parent}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.part"
        try:
            fs.put_file(str(local), staging)
            os.replace(staging, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging)
    else:
        fs.put_file(str(local), path)


@contextlib.contextmanager
def _workspace(settings: Settings, sample: Sample) -> Iterator[_Workspace]:
    with tempfile.TemporaryDirectory(prefix=f"genomics-{sample.name}-") as folder:
        yield _Workspace(Path(folder), settings, sample)


# ---------------------------------------------------------------------------------------------
# the steps, on a workspace


def _qc(ws: _Workspace) -> dict[str, Any]:
    path1, path2 = ws.reads()
    # One pass over the pairs: the figures of each file, and the pair check (same count,
    # same names) the map step makes, so qc alone also catches files that do not belong
    # together.
    stats = {"r1": _Stats(), "r2": _Stats()}
    pairs = 0
    for one, two in read_pairs(path1, path2, ws.sample.r1, ws.sample.r2):
        stats["r1"].add(one)
        stats["r2"].add(two)
        pairs += 1
    files = {
        "r1": stats["r1"].as_dict(ws.sample.r1),
        "r2": stats["r2"].as_dict(ws.sample.r2),
    }
    report = {"sample": ws.sample.name, "pairs": pairs, "files": files}
    ws.path("qc.json").write_text(json.dumps(report, indent=1))
    ws.publish("qc.json")
    return {
        "pairs": pairs,
        "reads": {key: file["reads"] for key, file in files.items()},
        "mean_quality": {key: _round(file["mean_quality"]) for key, file in files.items()},
        "mean_gc": {key: _round(file["gc"]["mean"]) for key, file in files.items()},
    }


def _map(ws: _Workspace) -> dict[str, Any]:
    path1, path2 = ws.reads()
    reference = ws.reference()
    pairs = read_pairs(path1, path2, ws.sample.r1, ws.sample.r2)
    counts = align_pairs(
        reference, pairs, ws.path("aligned.bam"), ws.sample.name, label=ws.settings.reference
    )
    reads = counts["reads"]
    stats = {
        "sample": ws.sample.name,
        "reference": ws.settings.reference,
        "aligner": f"minimap2 {mappy.__version__} (mappy), preset {PRESET}",
        **counts,
        "mapped_fraction": counts["mapped"] / reads if reads else 0.0,
        "properly_paired_fraction": counts["properly_paired"] / reads if reads else 0.0,
    }
    ws.path("map.json").write_text(json.dumps(stats, indent=1))
    ws.publish("aligned.bam", "map.json")
    return {key: stats[key] for key in ("reads", "mapped", "mapped_fraction")}


def align_pairs(
    reference: str | Path,
    pairs: Iterable[tuple[FastqRecord, FastqRecord]],
    bam: str | Path,
    group: str,
    *,
    label: str | None = None,
) -> dict[str, int]:
    """Align read pairs to a local FASTA with minimap2 (``sr``) and write an unsorted BAM.

    The header holds the reference's contigs, one read group ``group`` (ID = SM = LB) and a
    ``@PG`` line; every read gets one record (its primary alignment, or unmapped), so the BAM
    holds each read once. Returns ``pairs``, ``reads``, ``mapped`` and ``properly_paired``.
    """
    aligner = mappy.Aligner(str(reference), preset=PRESET)
    if not aligner or not aligner.seq_names:
        raise WorkerError(MISSING_INPUT, f"{label or reference}: not a FASTA reference")
    header = {
        "HD": {"VN": "1.6", "SO": "unsorted"},
        "SQ": [{"SN": contig, "LN": len(aligner.seq(contig))} for contig in aligner.seq_names],
        "RG": [{"ID": group, "SM": group, "LB": group}],
        "PG": [
            {
                "ID": "mappy",
                "PN": "minimap2 (mappy)",
                "VN": mappy.__version__,
                "CL": f"mappy.Aligner({str(label or reference)!r}, preset={PRESET!r}).map(r1, r2)",
            }
        ],
    }
    counts = dict.fromkeys(("pairs", "reads", "mapped", "properly_paired"), 0)
    contigs = {contig: number for number, contig in enumerate(aligner.seq_names)}
    with pysam.AlignmentFile(str(bam), "wb", header=header) as out:
        for one, two in pairs:
            for record in _pair_records(aligner, contigs, out.header, group, one, two):
                out.write(record)
                counts["reads"] += 1
                counts["mapped"] += not record.is_unmapped
                counts["properly_paired"] += record.is_proper_pair
            counts["pairs"] += 1
    return counts


def _pair_records(
    aligner: mappy.Aligner,
    contigs: Mapping[str, int],
    header: pysam.AlignmentHeader,
    group: str,
    one: FastqRecord,
    two: FastqRecord,
) -> list[pysam.AlignedSegment]:
    """The two BAM records of a pair: each read's primary alignment (or unmapped), with
    the mate fields, the proper-pair flag and TLEN filled in as samtools fixmate would."""
    primary: dict[int, Any] = {}
    for hit in aligner.map(one.sequence, two.sequence):
        if hit.is_primary and hit.read_num not in primary:
            primary[hit.read_num] = hit
    hits = (primary.get(1), primary.get(2))
    records = []
    for number, (read, hit) in enumerate(zip((one, two), hits, strict=True), start=1):
        record = pysam.AlignedSegment(header)
        record.query_name = _mate_name(read.name)
        flag = 0x1 | (0x40 if number == 1 else 0x80)
        sequence, quality = read.sequence, read.quality
        if hit is None:
            flag |= 0x4
        else:
            length = len(sequence)
            if hit.strand < 0:
                flag |= 0x10
                sequence, quality = mappy.revcomp(sequence), quality[::-1]
                left, right = length - hit.q_en, hit.q_st
            else:
                left, right = hit.q_st, length - hit.q_en
            # mappy reports the aligned part only: the rest of the read is soft-clipped.
            cigar = [(op, size) for size, op in hit.cigar]
            record.cigartuples = [(4, left)] * bool(left) + cigar + [(4, right)] * bool(right)
            record.reference_id = contigs[hit.ctg]
            record.reference_start = hit.r_st
            record.mapping_quality = hit.mapq
        record.query_sequence = sequence
        record.query_qualities = pysam.qualitystring_to_array(quality)
        record.flag = flag
        records.append(record)
    for record, hit, mate in ((records[0], hits[0], hits[1]), (records[1], hits[1], hits[0])):
        if mate is None:
            record.flag |= 0x8
            if hit is not None:  # SAM: an unmapped mate takes its mapped mate's place
                record.next_reference_id = contigs[hit.ctg]
                record.next_reference_start = hit.r_st
        else:
            record.flag |= 0x20 * (mate.strand < 0)
            record.next_reference_id = contigs[mate.ctg]
            record.next_reference_start = mate.r_st
            if hit is None:
                record.reference_id = contigs[mate.ctg]
                record.reference_start = mate.r_st
        if hit is not None:
            record.set_tag("NM", hit.NM)
        record.set_tag("RG", group)
    first, second = hits
    if first is not None and second is not None and first.ctg == second.ctg:
        start, end = min(first.r_st, second.r_st), max(first.r_en, second.r_en)
        size = end - start
        leftmost = 0 if first.r_st <= second.r_st else 1  # a tie goes to read 1
        records[leftmost].template_length = size
        records[1 - leftmost].template_length = -size
        forward, reverse = (first, second) if first.strand > 0 else (second, first)
        if forward.strand != reverse.strand and forward.r_st <= reverse.r_en and size <= MAX_INSERT:
            for record in records:
                record.flag |= 0x2
    return records


def _sort(ws: _Workspace) -> dict[str, Any]:
    sort_bam(ws.output("aligned.bam"), ws.path("sorted.bam"))
    ws.publish("sorted.bam")
    return {}


def _index(ws: _Workspace) -> dict[str, Any]:
    index_bam(ws.output("sorted.bam"), ws.path("sorted.bam.bai"))
    ws.publish("sorted.bam.bai")
    return {}


def sort_bam(source: str | Path, target: str | Path) -> None:
    """``samtools sort``: ``source`` BAM by coordinate into ``target``."""
    with _TOOLS:
        pysam.sort("-o", str(target), str(source), catch_stdout=False)


def index_bam(bam: str | Path, bai: str | Path | None = None) -> None:
    """``samtools index``: ``bam``'s ``.bai`` (next to it unless ``bai`` is given)."""
    with _TOOLS:
        pysam.index(str(bam), *([str(bai)] if bai else []), catch_stdout=False)


def index_fasta(fasta: str | Path) -> None:
    """``samtools faidx``: the ``.fai`` that mpileup needs next to a plain FASTA."""
    with _TOOLS:
        pysam.faidx(str(fasta))


def _call(ws: _Workspace) -> dict[str, Any]:
    ordered = ws.output("sorted.bam")
    ws.output("sorted.bam.bai")  # mpileup finds it next to the BAM
    calls = ws.path("calls.vcf.gz")
    call_variants(ordered, ws.reference(), calls, min_qual=ws.settings.min_qual)
    ws.publish("calls.vcf.gz", "calls.vcf.gz.csi")
    return summarise_vcf(calls)


def call_variants(
    bam: str | Path, reference: str | Path, vcf: str | Path, *, min_qual: float = 20.0
) -> None:
    """``bcftools mpileup | call -mv`` on an indexed BAM -> bgzipped ``vcf`` and ``vcf.csi``.

    The reference must be a plain FASTA with its ``.fai``. Calls under ``min_qual`` stay in
    the file with FILTER ``LowQual``, so what was cut can still be looked at.
    """
    folder = Path(vcf).parent
    pileup, raw = folder / f".{Path(vcf).name}.pileup.bcf", folder / f".{Path(vcf).name}.raw.vcf.gz"
    # mpileup | call through files: pysam runs each tool as a function call, not a process.
    # FORMAT/AD and DP are what the notebook plots; -mv keeps variant sites only. htslib's
    # warning that bcftools' own header types INFO/MQ as Integer is silenced (errors stay).
    with _TOOLS:
        quiet = pysam.set_verbosity(1)
        try:
            pysam.bcftools.mpileup(
                "-f", str(reference), "-a", "FORMAT/AD,FORMAT/DP", "-Ou", "-o", str(pileup),
                str(bam), catch_stdout=False,
            )  # fmt: skip
            pysam.bcftools.call("-mv", "-Oz", "-o", str(raw), str(pileup), catch_stdout=False)
            pysam.bcftools.filter(
                "-s", "LowQual", "-e", f"QUAL<{min_qual:g}", "-Oz", "-o", str(vcf), str(raw),
                catch_stdout=False,
            )  # fmt: skip
            pysam.bcftools.index("-f", str(vcf), catch_stdout=False)
        finally:
            pysam.set_verbosity(quiet)
    pileup.unlink()
    raw.unlink()


def summarise_vcf(path: str | Path) -> dict[str, Any]:
    """Counts of a local VCF: ``variants``, ``snps``, ``indels``, ``passed`` (FILTER PASS)."""
    counts = Counter[str]()
    for call_ in _records(path):
        counts["variants"] += 1
        counts["snps" if call_["kind"] == "snp" else "indels"] += 1
        counts["passed"] += call_["filter"] == "PASS"
    return {key: counts[key] for key in ("variants", "snps", "indels", "passed")}


def load_calls(url: str) -> list[dict[str, Any]]:
    """The records of a VCF at any fsspec URL as dicts: ``sample``, ``chrom``, ``pos``, ``ref``,
    ``alt`` (the first ALT), ``kind`` (snp, insertion, deletion, other), ``qual``, ``filter``
    (``PASS`` or the filters joined by ``;``), ``depth`` (FORMAT/DP), ``genotype`` (``1/1``).

    >>> load_calls("s3://bucket/out/genomics/sample01/calls.vcf.gz")[0]["pos"]  # doctest: +SKIP
    4803
    """
    fs, path = fsspec.core.url_to_fs(url)
    with tempfile.TemporaryDirectory(prefix="genomics-calls-") as folder:
        local = Path(folder) / "calls.vcf.gz"
        fs.get(path, str(local))
        return _records(local)


def _records(path: str | Path) -> list[dict[str, Any]]:
    # htslib warns on stderr about bcftools' own header (INFO/MQ typed Integer) and about the
    # index when only the VCF was fetched: neither matters for reading it whole.
    with _TOOLS:
        quiet = pysam.set_verbosity(0)
        try:
            with pysam.VariantFile(str(path)) as vcf:
                samples = list(vcf.header.samples)
                rows = []
                for record in vcf:
                    ref, alt = record.ref or "", (record.alts or ("",))[0]
                    filters = list(record.filter.keys())
                    call_ = record.samples[samples[0]] if samples else None
                    genotype = call_.get("GT") if call_ is not None else None
                    rows.append(
                        {
                            "sample": samples[0] if samples else None,
                            "chrom": record.chrom,
                            "pos": record.pos,
                            "ref": ref,
                            "alt": alt,
                            "kind": _kind(ref, alt),
                            "qual": record.qual,
                            "filter": ";".join(filters) if filters else "PASS",
                            "depth": call_.get("DP") if call_ is not None else None,
                            "genotype": "/".join("." if g is None else str(g) for g in genotype)
                            if genotype
                            else None,
                        }
                    )
        finally:
            pysam.set_verbosity(quiet)
    return rows


def _kind(ref: str, alt: str) -> str:
    if len(ref) == len(alt) == 1:
        return "snp"
    if len(ref) == 1 and alt.startswith(ref):
        return "insertion"
    if len(alt) == 1 and ref.startswith(alt):
        return "deletion"
    return "other"


_RUN = {"qc": _qc, "map": _map, "sort": _sort, "index": _index, "call": _call}


# ---------------------------------------------------------------------------------------------
# workers


def _steps(event: Mapping[str, Any], steps: tuple[str, ...]) -> list[dict[str, Any]]:
    """Run ``steps`` for every item of the batch: one output entry per item, in order."""
    if not isinstance(event, Mapping) or "Items" not in event:
        raise WorkerError(INVALID_BATCH_INPUT, "genomics workers take a batch (ItemBatcher)")
    settings = Settings.from_batch_input(event.get("BatchInput"))
    outputs = []
    for item in event["Items"]:
        row = Sample.from_item(item, settings)
        entry: dict[str, Any] = {"sample": row.name, "steps": list(steps)}
        with _workspace(settings, row) as ws:
            for step in steps:
                result = _RUN[step](ws)
                if result:
                    entry[step] = result
            entry["outputs"] = ws.published
        outputs.append(entry)
    return outputs


def qc(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Read count, length and GC distribution, mean base quality per read file -> qc.json."""
    return _steps(event, ("qc",))


def map_reads(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Align read pairs with minimap2 (mappy, sr preset) -> aligned.bam, map.json."""
    return _steps(event, ("map",))


def sort(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Sort aligned.bam by coordinate (pysam.sort) -> sorted.bam."""
    return _steps(event, ("sort",))


def index(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Index sorted.bam (pysam.index) -> sorted.bam.bai."""
    return _steps(event, ("index",))


def call(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Call variants (bcftools mpileup | call -mv) -> calls.vcf.gz and its .csi index."""
    return _steps(event, ("call",))


def sample(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """All steps for each sample: qc, map, sort, index, call, in one batch."""
    return _steps(event, STEPS)


# ---------------------------------------------------------------------------------------------
# reduce


def reduce(context: ReduceContext) -> dict[str, Any]:
    """Summarise every sample of the run -> ``{Dest}/genomics/summary.json``.

    Per sample, from whatever its folder holds (so it works after any step, and after a chain
    of single-step runs): the QC figures per read file, the mapped fraction, and the variant
    counts. Samples whose batch failed are listed with their Error and Cause. Returns the
    summary without the per-file detail.
    """
    settings = Settings.from_batch_input(context.batch_input, dest=context.destination)
    names: list[str] = []
    for output in context.outputs():
        for entry in output or ():
            if isinstance(entry, Mapping) and entry.get("sample") not in names:
                names.append(entry["sample"])
    samples = {name: _sample_summary(settings, name) for name in sorted(names)}
    failed = _failed(context)
    summary = {
        "run_id": context.run_id,
        "samples": samples,
        "failed": failed,
    }
    with tempfile.TemporaryDirectory(prefix="genomics-summary-") as folder:
        local = Path(folder) / "summary.json"
        local.write_text(json.dumps(summary, indent=1))
        _put(local, f"{settings.root}/summary.json")
    brief = {
        name: {
            "pairs": s.get("qc", {}).get("pairs"),
            "mapped_fraction": _round(s.get("mapped_fraction")),
            "variants": (s.get("variants") or {}).get("passed"),
        }
        for name, s in samples.items()
    }
    return {
        "summary": f"{settings.root}/summary.json",
        "samples": brief,
        "failed": [entry["sample"] for entry in failed],
    }


def _sample_summary(settings: Settings, name: str) -> dict[str, Any]:
    folder = settings.folder(name)
    found: dict[str, Any] = {}
    report = _read_json(f"{folder}/qc.json")
    if report is not None:
        found["qc"] = {
            "pairs": report["pairs"],
            "files": {
                key: {
                    "reads": stats["reads"],
                    "mean_length": _round(stats["length"]["mean"]),
                    "mean_gc": _round(stats["gc"]["mean"]),
                    "mean_quality": _round(stats["mean_quality"]),
                    "q30_fraction": _round(stats["q30_fraction"]),
                }
                for key, stats in report["files"].items()
            },
        }
    mapping = _read_json(f"{folder}/map.json")
    if mapping is not None:
        found["mapped_fraction"] = mapping["mapped_fraction"]
        found["properly_paired_fraction"] = mapping["properly_paired_fraction"]
    fs, path = fsspec.core.url_to_fs(f"{folder}/calls.vcf.gz")
    if fs.exists(path):
        with tempfile.TemporaryDirectory(prefix="genomics-summary-") as tmp:
            local = Path(tmp) / "calls.vcf.gz"
            fs.get(path, str(local))
            found["variants"] = summarise_vcf(local)
    return found


def _read_json(url: str) -> Any:
    fs, path = fsspec.core.url_to_fs(url)
    try:
        with fs.open(path, "rb") as stream:
            return json.loads(stream.read())
    except FileNotFoundError:
        return None


def _failed(context: ReduceContext) -> list[dict[str, Any]]:
    """The samples of FAILED batches, with the batch's Error and Cause."""
    failed = []
    options = dict(context.storage_options)
    for kind, record in iter_result_records(context.manifest_url, storage_options=options):
        if kind != "FAILED" or not isinstance(record, Mapping):
            continue
        given = record.get("Input")
        child = json.loads(given) if isinstance(given, str) else given or {}
        for item in child.get("Items", []) if isinstance(child, Mapping) else []:
            name = item.get("sample") if isinstance(item, Mapping) else None
            failed.append(
                {"sample": name, "error": record.get("Error"), "cause": record.get("Cause")}
            )
    return failed


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
