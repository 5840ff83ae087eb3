"""Seeded genomics samples (``shardmap sample genomics DEST``) from real reads with planted,
known variants. Design: ``docs/workloads-genomics.md``.

The data are the lambda-phage reference and the 10,000 read pairs that bowtie2 ships as its
example (Debian ``bowtie2-examples``, vendored in ``workers/data/lambda/``). The example reads
were simulated from a lambda genome that differs from the shipped reference (86 SNPs and
indels, all homozygous); calling against the shipped reference would report those in every
sample. So the reference written here is **the reads' own genome**: the shipped reference with
those differences applied (found by calling all 10,000 pairs, about 45x, and repeated until a
call finds nothing). Against it the unedited reads carry no variant, and the planted ones are
the whole truth.

Layout under ``dest_url``::

    reference/lambda_virus.fa        the reads' lambda genome (contig ``lambda_virus``)
    reads/<sample>_1.fq.gz, _2.fq.gz the pairs split into ``count`` samples, variants planted
    samples.csv                      sample,r1,r2 (keys relative to dest_url), written last

Each sample gets 12-18 homozygous SNPs and 2-3 indels of 1-3 bases, at least
:data:`SPACING` bases apart and :data:`MARGIN` bases from the genome's ends, and only at
*callable* sites: where the sample has at least :data:`MIN_DEPTH` reads whose aligned base has
quality 13 or more (at the default 4 samples, about 11x raw and 6x such bases, a third of the
genome is below that, and a variant there is often missed by any caller). An indel is only
planted where it has a single representation (it cannot slide left or right along a repeat), so
the truth compares exactly with what bcftools reports. Reads are edited, not simulated: each
pair is aligned to the reference with minimap2 and the bases of each read at a planted position
are rewritten (SNP), removed (deletion) or added (insertion), qualities kept. Reads stay real
reads, errors and all.
"""

from __future__ import annotations

import functools
import gzip
import random
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import mappy
import numpy as np

from workers.genomics import (
    FastqRecord,
    align_pairs,
    call_variants,
    index_bam,
    index_fasta,
    load_calls,
    sort_bam,
)

__all__ = ["CONTIG", "MARGIN", "SPACING", "Variant", "genomics_sample", "sample_reference"]

DATA = Path(__file__).parent / "data" / "lambda"
CONTIG = "lambda_virus"
MARGIN = 500  # no variant this close to either end of the genome
SPACING = 300  # bases between two variants of a sample: more than a read, so one per read
SNPS = (12, 18)
INDELS = (2, 3)
INDEL_SIZES = (1, 2, 3)
MAX_SAMPLES = 8  # 10,000 pairs / 8 = 1,250 pairs, about 5x: little more is callable
#: A variant is planted only where the sample has this many reads whose aligned base has at
#: least MIN_BASE_QUALITY: where a caller could see it at all (the truth is "callable" sites).
MIN_DEPTH = 5
MIN_BASE_QUALITY = 13
_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


@dataclass(frozen=True, order=True)
class Variant:
    """A planted variant in VCF terms: 1-based ``pos``, ``ref`` and ``alt`` alleles."""

    pos: int
    ref: str
    alt: str

    @property
    def start(self) -> int:
        """0-based position of the first base of ``ref``."""
        return self.pos - 1

    def as_dict(self, sample: str) -> dict[str, Any]:
        return {"sample": sample, "pos": self.pos, "ref": self.ref, "alt": self.alt}


def genomics_sample(
    dest_url: str, *, count: int | None = None, seed: int = 7, corrupt: bool = False
) -> dict[str, Any]:
    """Write ``count`` (default 4) samples with planted variants under ``dest_url``.

    Returns ``objects`` (files written), ``samples`` (names, in manifest order), ``truth``
    (``[{sample, pos, ref, alt}]``, 1-based VCF positions on the written reference), ``pairs``
    per sample, ``reference`` (contig, length, differences from the shipped reference) and,
    with ``corrupt=True``, ``corrupt``: the extra sample whose first FASTQ is truncated inside
    a record, with the file, line, record and reason the pipeline must report.

    >>> genomics_sample("genomics-data")["samples"]  # doctest: +SKIP
    ['sample01', 'sample02', 'sample03', 'sample04']
    """
    count = 4 if count is None else count
    if not 1 <= count <= MAX_SAMPLES:
        raise ValueError(f"count must be between 1 and {MAX_SAMPLES} samples, not {count}")
    rng = random.Random(seed)
    genome, differences = sample_reference()
    pairs = _pairs()
    order = list(range(len(pairs)))
    rng.shuffle(order)
    groups = [sorted(order[number::count]) for number in range(count)]
    names = [f"sample{number + 1:02d}" for number in range(count)]
    aligner = mappy.Aligner(seq=genome, preset="sr")

    files: dict[str, bytes] = {}
    truth: list[dict[str, Any]] = []
    rows = []
    for name, group in zip(names, groups, strict=True):
        mine = [pairs[number] for number in group]
        hits = [_primary(aligner, pair) for pair in mine]
        variants = _plant(genome, _depth(len(genome), mine, hits) >= MIN_DEPTH, rng, name)
        truth += [variant.as_dict(name) for variant in variants]
        edited = [
            (_edit_read(one, hit1, variants), _edit_read(two, hit2, variants))
            for (one, two), (hit1, hit2) in zip(mine, hits, strict=True)
        ]
        files[f"reads/{name}_1.fq.gz"] = _fastq(pair[0] for pair in edited)
        files[f"reads/{name}_2.fq.gz"] = _fastq(pair[1] for pair in edited)
        rows.append((name, len(group)))

    broken = None
    if corrupt:
        name = f"sample{count + 1:02d}"
        mine = [pairs[number] for number in groups[0][:400]]
        kept = 300  # records whole; the next one is cut after its sequence line
        text = "".join(_record(pair[0]) for pair in mine[:kept])
        cut = mine[kept][0]
        text += f"@{cut.name}\n{cut.sequence}\n"
        files[f"reads/{name}_1.fq.gz"] = _gzip(text.encode())
        files[f"reads/{name}_2.fq.gz"] = _fastq(pair[1] for pair in mine)
        rows.append((name, len(mine)))
        broken = {
            "sample": name,
            "file": f"reads/{name}_1.fq.gz",
            "line": 4 * kept + 1,
            "record": kept + 1,
            "reason": "the file ends inside the record (no '+' separator line)",
        }

    files["reference/lambda_virus.fa"] = _fasta(genome, differences)
    manifest = "sample,r1,r2\n" + "".join(
        f"{name},reads/{name}_1.fq.gz,reads/{name}_2.fq.gz\n" for name, _ in rows
    )
    files["samples.csv"] = manifest.encode()  # last: it names files that must exist
    _write(dest_url, files)
    return {
        "objects": len(files),
        "samples": [name for name, _ in rows],
        "pairs": dict(rows),
        "truth": truth,
        "reference": {"contig": CONTIG, "length": len(genome), "differences": differences},
        "corrupt": broken,
    }


# -- the reads' genome ------------------------------------------------------------------------


@functools.cache
def _pairs() -> tuple[tuple[FastqRecord, FastqRecord], ...]:
    """The 10,000 example pairs, as shipped (the files are valid: parsed without checks)."""
    found = []
    for path in ("reads_1.fq.gz", "reads_2.fq.gz"):
        found.append(
            [
                FastqRecord(name, sequence, quality, 0)
                for name, sequence, quality in mappy.fastx_read(str(DATA / path))
            ]
        )
    return tuple(zip(*found, strict=True))


def _shipped_reference() -> str:
    with gzip.open(DATA / "lambda_virus.fa.gz", "rt") as stream:
        return "".join(line.strip() for line in stream if not line.startswith(">")).upper()


@functools.cache
def sample_reference(rounds: int = 3) -> tuple[str, int]:
    """The lambda genome the example reads come from, and how many differences from the
    shipped reference it has.

    Call all 10,000 pairs against the shipped reference, apply the homozygous calls (bcftools
    consensus), and repeat until a call finds nothing more (``rounds`` at most; the first
    round finds them all). Deterministic: the same aligner and caller on the same bytes.
    """
    genome = _shipped_reference()
    applied = 0
    with tempfile.TemporaryDirectory(prefix="genomics-reference-") as folder:
        for number in range(rounds):
            reference = Path(folder) / f"round{number}.fa"
            reference.write_bytes(_fasta(genome, applied))
            index_fasta(reference)
            aligned, ordered = Path(folder) / "aligned.bam", Path(folder) / "sorted.bam"
            align_pairs(reference, _pairs(), aligned, "all")
            sort_bam(aligned, ordered)
            index_bam(ordered)
            calls = Path(folder) / f"round{number}.vcf.gz"
            call_variants(ordered, reference, calls)
            found = _homozygous(calls)
            if not found:
                return genome, applied
            genome = _apply(genome, found)
            applied += len(found)
    raise RuntimeError(f"the reads still differ from the reference after {rounds} rounds")


def _homozygous(vcf: Path) -> list[Variant]:
    return [
        Variant(call["pos"], call["ref"], call["alt"])
        for call in load_calls(str(vcf))
        if call["filter"] == "PASS" and call["genotype"] == "1/1"
    ]


def _apply(genome: str, variants: Iterable[Variant]) -> str:
    """``genome`` with non-overlapping variants applied (what bcftools consensus does)."""
    parts, at = [], 0
    for variant in sorted(variants):
        if variant.start < at:
            continue  # overlaps the previous one: the next round sees it again if real
        if genome[variant.start : variant.start + len(variant.ref)] != variant.ref:
            raise ValueError(f"{variant} does not match the reference")
        parts += [genome[at : variant.start], variant.alt]
        at = variant.start + len(variant.ref)
    return "".join([*parts, genome[at:]])


def _fasta(genome: str, differences: int) -> bytes:
    lines = [genome[at : at + 70] for at in range(0, len(genome), 70)]
    title = (
        f">{CONTIG} Enterobacteria phage lambda (NC_001416.1) as the bowtie2 example reads"
        f" see it: {differences} differences applied"
    )
    return ("\n".join([title, *lines]) + "\n").encode()


# -- planting ---------------------------------------------------------------------------------


def _plant(genome: str, callable_: np.ndarray, rng: random.Random, name: str) -> list[Variant]:
    """SNPs and indels at random callable places, spaced apart, each with one representation."""
    wanted = ["snp"] * rng.randint(*SNPS) + ["indel"] * rng.randint(*INDELS)
    rng.shuffle(wanted)
    inside = np.zeros(len(genome), dtype=bool)
    inside[MARGIN : len(genome) - MARGIN] = True
    candidates = np.flatnonzero(callable_ & inside).tolist()
    too_few = ValueError(
        f"{name}: too few callable positions to plant {len(wanted)} variants "
        "(too many samples for 10,000 pairs?)"
    )
    if not candidates:
        raise too_few
    taken: list[int] = []
    variants: list[Variant] = []
    for kind in wanted:
        for _ in range(10_000):
            start = rng.choice(candidates)
            if any(abs(start - other) < SPACING for other in taken):
                continue
            variant = _snp(genome, start, rng) if kind == "snp" else _indel(genome, start, rng)
            if variant is not None and callable_[start : start + len(variant.ref) + 1].all():
                break
        else:
            raise too_few
        taken.append(start)
        variants.append(variant)
    return sorted(variants)


def _primary(aligner: mappy.Aligner, pair: tuple[FastqRecord, FastqRecord]) -> tuple[Any, Any]:
    """The primary alignment of each read of a pair (``None`` when unmapped)."""
    hits: dict[int, Any] = {}
    for hit in aligner.map(pair[0].sequence, pair[1].sequence):
        if hit.is_primary and hit.read_num not in hits:
            hits[hit.read_num] = hit
    return hits.get(1), hits.get(2)


def _depth(
    length: int, pairs: Sequence[tuple[FastqRecord, FastqRecord]], hits: Sequence[Any]
) -> np.ndarray:
    """Per reference position, the reads whose aligned base has quality >= MIN_BASE_QUALITY."""
    depth = np.zeros(length, dtype=np.int32)
    for pair, pair_hits in zip(pairs, hits, strict=True):
        for read, hit in zip(pair, pair_hits, strict=True):
            if hit is None:
                continue
            quality = read.quality if hit.strand > 0 else read.quality[::-1]
            good = np.frombuffer(quality.encode(), dtype=np.uint8) >= 33 + MIN_BASE_QUALITY
            ref_pos = hit.r_st
            read_pos = hit.q_st if hit.strand > 0 else len(quality) - hit.q_en
            for size, op in hit.cigar:
                if op == 0:
                    depth[ref_pos : ref_pos + size] += good[read_pos : read_pos + size]
                    ref_pos, read_pos = ref_pos + size, read_pos + size
                elif op == 1:
                    read_pos += size
                else:
                    ref_pos += size
    return depth


def _snp(genome: str, start: int, rng: random.Random) -> Variant | None:
    ref = genome[start]
    if ref not in "ACGT":
        return None
    return Variant(start + 1, ref, rng.choice([base for base in "ACGT" if base != ref]))


def _indel(genome: str, start: int, rng: random.Random) -> Variant | None:
    """A deletion of ``genome[start+1 : start+1+k]`` or an insertion after ``start``, or
    ``None`` when the event could slide along a repeat (then callers may place it elsewhere)."""
    size = rng.choice(INDEL_SIZES)
    anchor = genome[start]
    if rng.random() < 0.5:
        deleted = genome[start + 1 : start + 1 + size]
        # It slides left if the anchor equals the last deleted base, right if the base after
        # equals the first deleted base.
        if anchor == deleted[-1] or genome[start + 1 + size] == deleted[0]:
            return None
        return Variant(start + 1, anchor + deleted, anchor)
    inserted = "".join(rng.choice("ACGT") for _ in range(size))
    if anchor == inserted[-1] or genome[start + 1] == inserted[0]:
        return None
    return Variant(start + 1, anchor, anchor + inserted)


def _edit_read(read: FastqRecord, hit: Any, variants: Sequence[Variant]) -> FastqRecord:
    if hit is None:
        return read
    near = [v for v in variants if v.start < hit.r_en + 50 and v.start + len(v.ref) > hit.r_st - 50]
    if not near:
        return read
    forward = hit.strand > 0
    sequence = read.sequence if forward else _revcomp(read.sequence)
    quality = read.quality if forward else read.quality[::-1]
    length = len(sequence)
    first = hit.q_st if forward else length - hit.q_en  # aligned part, reference orientation
    last = hit.q_en if forward else length - hit.q_st
    at = {}  # reference position -> read position, for aligned (M) bases
    ref_pos, read_pos = hit.r_st, first
    for size, op in hit.cigar:
        if op == 0:
            for step in range(size):
                at[ref_pos + step] = read_pos + step
            ref_pos, read_pos = ref_pos + size, read_pos + size
        elif op == 1:
            read_pos += size
        else:  # deletion or skip
            ref_pos += size
    # Soft-clipped ends are placed by extension (no indel assumed there), so a read whose end
    # was clipped because of errors still carries a SNP inside the clip.
    clipped = {}
    for offset in range(first):
        clipped[hit.r_st - first + offset] = offset
    for offset in range(last, length):
        clipped[hit.r_en + offset - last] = offset

    replace: dict[int, str] = {}
    drop: set[int] = set()
    insert: dict[int, str] = {}
    for variant in near:
        if len(variant.ref) == len(variant.alt) == 1:
            position = at.get(variant.start, clipped.get(variant.start))
            if position is not None and sequence[position] != "N":  # a no-call stays one
                replace[position] = variant.alt
        elif len(variant.ref) > 1:  # deletion of ref[1:]
            for ref_pos in range(variant.start + 1, variant.start + len(variant.ref)):
                if ref_pos in at:
                    drop.add(at[ref_pos])
        elif variant.start in at and variant.start + 1 in at:  # insertion inside the read
            insert[at[variant.start]] = variant.alt[1:]
    if not (replace or drop or insert):
        return read
    bases, scores = [], []
    for position in range(length):
        if position in drop:
            continue
        bases.append(replace.get(position, sequence[position]))
        scores.append(quality[position])
        if position in insert:
            added = insert[position]
            bases.append(added)
            scores.append(quality[position] * len(added))
    sequence, quality = "".join(bases), "".join(scores)
    if not forward:
        sequence, quality = _revcomp(sequence), quality[::-1]
    return FastqRecord(read.name, sequence, quality, read.line)


def _revcomp(sequence: str) -> str:
    return sequence.translate(_COMPLEMENT)[::-1]


# -- writing ----------------------------------------------------------------------------------


def _record(read: FastqRecord) -> str:
    return f"@{read.name}\n{read.sequence}\n+\n{read.quality}\n"


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # no timestamp: the same seed writes the same bytes


def _fastq(reads: Iterable[FastqRecord]) -> bytes:
    return _gzip("".join(_record(read) for read in reads).encode())


def _write(dest_url: str, files: dict[str, bytes]) -> None:
    fs, root = fsspec.core.url_to_fs(dest_url)
    root = root.rstrip("/")
    for key, body in files.items():  # in order: samples.csv last
        path = f"{root}/{key}"
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, body)
