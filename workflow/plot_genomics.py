"""The Snakefile's last genomics step: QC and variant-quality figures, and recall/precision.

    python workflow/plot_genomics.py RESULTS_URL OUT_URL [--truth SAMPLE_SUMMARY_URL]
        [--manifest STEP_MANIFEST_URL ...]

Reads what the step runs left under ``RESULTS_URL/genomics/`` (``summary.json`` from the
reduce step, each sample's ``qc.json`` and ``calls.vcf.gz``) and, from the step runs'
manifests in step order, the step where each failed sample first failed, with its Error and
Cause. Writes to ``OUT_URL/``:

- ``qc.png``: read-length and GC distributions, mean base quality and mapped fraction per sample;
- ``variants.png``: QUAL of every call (true and false positives apart when the truth is
  known) and, per sample, true positives, false positives and missed variants;
- ``report.json``, written last: samples, failed samples (with their error), calls per sample
  and, given the sample generator's summary (``--truth``), recall and precision of the PASS
  calls against its planted variants, per sample and overall.

Every URL may be a local path or ``s3://bucket/key``.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import fsspec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_url", help="the genomics runs' --dest")
    parser.add_argument("out_url", help="folder for qc.png, variants.png and report.json")
    parser.add_argument("--truth", help="the genomics sample summary (JSON with 'truth')")
    parser.add_argument(
        "--manifest", action="append", default=[], help="a step run's manifest.json, in order"
    )
    args = parser.parse_args(argv)
    root = f"{args.results_url.rstrip('/')}/genomics"
    summary = _read_json(f"{root}/summary.json")
    names = sorted(summary["samples"])
    qc = {name: _read_json(f"{root}/{name}/qc.json", missing=None) for name in names}
    calls = {name: _calls(f"{root}/{name}/calls.vcf.gz") for name in names}
    truth = _truth(args.truth) if args.truth else None
    report = _report(summary, calls, truth)
    if args.manifest:
        report["failed"] = _failures(args.manifest)

    out = args.out_url.rstrip("/")
    fs, base = fsspec.core.url_to_fs(out)
    fs.makedirs(base, exist_ok=True)
    fs.pipe_file(f"{base}/qc.png", _qc_figure(summary, qc))
    fs.pipe_file(f"{base}/variants.png", _variants_figure(calls, truth, report))
    fs.pipe_file(f"{base}/report.json", json.dumps(report, indent=1).encode())
    overall = report.get("overall")
    if overall:
        print(f"recall {overall['recall']:.3f}, precision {overall['precision']:.3f}")
    print(f"wrote {out}/report.json")


def _read_json(url: str, missing: Any = ...) -> Any:
    try:
        with fsspec.open(url) as f:
            return json.load(f)
    except FileNotFoundError:
        if missing is ...:
            raise
        return missing


def _failures(manifests: list[str]) -> list[dict[str, Any]]:
    """Each failed sample once, with the first step run that failed it."""
    from runner import load_results

    first: dict[str, dict[str, Any]] = {}
    for url in manifests:
        frame = load_results(url)
        for row in frame[frame.status != "SUCCEEDED"].itertuples():
            name = (row.item or {}).get("sample")
            if name and name not in first:
                run_id = url.rstrip("/").rsplit("/", 2)[-2]
                first[name] = {
                    "sample": name,
                    "run": run_id,
                    "error": row.error,
                    "cause": row.cause,
                }
    return sorted(first.values(), key=lambda entry: entry["sample"])


def _calls(url: str) -> list[dict[str, Any]] | None:
    """The VCF's records, or ``None`` when the sample has none (its call step failed)."""
    import pysam

    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return None
    with tempfile.TemporaryDirectory(prefix="plot-genomics-") as folder:
        local = Path(folder) / "calls.vcf.gz"
        fs.get(path, str(local))
        # htslib complains about bcftools' own header (INFO/MQ typed Integer) and the index
        # not fetched with the file; neither matters for reading the file whole.
        quiet = pysam.set_verbosity(0)
        try:
            vcf = pysam.VariantFile(str(local))
        finally:
            pysam.set_verbosity(quiet)
        with vcf:
            return [
                {
                    "pos": record.pos,
                    "ref": record.ref,
                    "alt": (record.alts or ("",))[0],
                    "qual": record.qual,
                    "passed": list(record.filter.keys()) in ([], ["PASS"]),
                }
                for record in vcf
            ]


def _truth(url: str) -> dict[str, set[tuple[int, str, str]]] | None:
    planted = _read_json(url, missing={}).get("truth")
    if planted is None:
        return None
    truth: dict[str, set[tuple[int, str, str]]] = {}
    for variant in planted:
        truth.setdefault(variant["sample"], set()).add(
            (variant["pos"], variant["ref"], variant["alt"])
        )
    return truth


def _scores(true_positives: int, called: int, planted: int) -> dict[str, Any]:
    return {
        "planted": planted,
        "called": called,
        "true_positives": true_positives,
        "recall": true_positives / planted if planted else None,
        "precision": true_positives / called if called else None,
    }


def _report(
    summary: dict[str, Any],
    calls: dict[str, list[dict[str, Any]] | None],
    truth: dict[str, set[tuple[int, str, str]]] | None,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "run_id": summary.get("run_id"),
        "samples": sorted(summary["samples"]),
        "failed": summary.get("failed", []),
        "calls": {
            name: None if records is None else sum(r["passed"] for r in records)
            for name, records in calls.items()
        },
    }
    if truth is None:
        return report
    per_sample, totals = {}, [0, 0, 0]
    for name in sorted(set(truth) | {n for n, r in calls.items() if r is not None}):
        found = {(r["pos"], r["ref"], r["alt"]) for r in calls.get(name) or () if r["passed"]}
        planted = truth.get(name, set())
        scores = _scores(len(found & planted), len(found), len(planted))
        per_sample[name] = scores
        for number, key in enumerate(("true_positives", "called", "planted")):
            totals[number] += scores[key]
    report["per_sample"] = per_sample
    report["overall"] = _scores(*totals)
    return report


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display; the figures go to files
    import matplotlib.pyplot as plt

    return plt


def _qc_figure(summary: dict[str, Any], qc: dict[str, dict[str, Any] | None]) -> bytes:
    plt = _pyplot()
    figure, ((lengths, gc), (quality, mapped)) = plt.subplots(2, 2, figsize=(11, 7))
    names = sorted(summary["samples"])
    for name in names:
        files = (qc.get(name) or {}).get("files", {})
        counts: dict[int, int] = {}
        gc_counts = [0] * 101
        for report in files.values():
            for length, count in report["length"]["histogram"]:
                counts[length] = counts.get(length, 0) + count
            for percent, count in enumerate(report["gc"]["histogram"]):
                gc_counts[percent] += count
        if counts:
            xs = sorted(counts)
            lengths.plot(xs, [counts[x] for x in xs], label=name, linewidth=1)
            gc.plot(range(101), gc_counts, label=name, linewidth=1)
    lengths.set(title="Read length", xlabel="bases", ylabel="reads")
    gc.set(title="GC content", xlabel="GC %", ylabel="reads")
    for axes in (lengths, gc):
        if axes.lines:
            axes.legend(fontsize="small")
    width = 0.4
    for offset, mate in ((-width / 2, "r1"), (width / 2, "r2")):
        values = [
            ((qc.get(name) or {}).get("files", {}).get(mate) or {}).get("mean_quality", 0)
            for name in names
        ]
        quality.bar([i + offset for i in range(len(names))], values, width, label=mate)
    quality.set(title="Mean base quality", ylabel="Phred", xticks=range(len(names)))
    quality.set_xticklabels(names, rotation=45, ha="right")
    quality.legend(fontsize="small")
    fractions = [summary["samples"][name].get("mapped_fraction") or 0 for name in names]
    mapped.bar(range(len(names)), fractions)
    mapped.set(title="Mapped fraction", ylim=(0, 1), xticks=range(len(names)))
    mapped.set_xticklabels(names, rotation=45, ha="right")
    failed = ", ".join(entry["sample"] for entry in summary.get("failed", []))
    figure.suptitle("Read QC" + (f" (failed: {failed})" if failed else ""))
    figure.tight_layout()
    data = _png(figure)
    plt.close(figure)
    return data


def _variants_figure(
    calls: dict[str, list[dict[str, Any]] | None],
    truth: dict[str, set[tuple[int, str, str]]] | None,
    report: dict[str, Any],
) -> bytes:
    plt = _pyplot()
    figure, (quals, counts) = plt.subplots(1, 2, figsize=(11, 4.5))
    true_quals, false_quals = [], []
    for name, records in calls.items():
        planted = (truth or {}).get(name, set())
        for record in records or ():
            known = truth is None or (record["pos"], record["ref"], record["alt"]) in planted
            (true_quals if known else false_quals).append(record["qual"] or 0)
    label = "calls" if truth is None else "true positives"
    top = max([*true_quals, *false_quals, 1.0])
    bins = [top * step / 30 for step in range(31)]  # one set of bins for both histograms
    quals.hist(true_quals, bins=bins, alpha=0.7, label=label)
    if truth is not None:
        quals.hist(false_quals, bins=bins, alpha=0.7, label="false positives")
    quals.set(title="Variant quality (all calls)", xlabel="QUAL", ylabel="calls")
    quals.legend(fontsize="small")
    per_sample = report.get("per_sample")
    if per_sample:
        names = sorted(per_sample)
        tp = [per_sample[n]["true_positives"] for n in names]
        fp = [per_sample[n]["called"] - per_sample[n]["true_positives"] for n in names]
        fn = [per_sample[n]["planted"] - per_sample[n]["true_positives"] for n in names]
        xs = range(len(names))
        counts.bar(xs, tp, label="true positives")
        counts.bar(xs, fp, bottom=tp, label="false positives")
        counts.bar(xs, fn, bottom=[a + b for a, b in zip(tp, fp, strict=True)], label="missed")
        overall = report["overall"]
        counts.set(
            title=f"PASS calls vs truth: recall {overall['recall'] or 0:.2f}, "
            f"precision {overall['precision'] or 0:.2f}",
            xticks=list(xs),
        )
        counts.set_xticklabels(names, rotation=45, ha="right")
        counts.legend(fontsize="small")
    else:
        names = sorted(report["calls"])
        counts.bar(range(len(names)), [report["calls"][n] or 0 for n in names])
        counts.set(title="PASS calls per sample (no truth)", xticks=range(len(names)))
        counts.set_xticklabels(names, rotation=45, ha="right")
    figure.tight_layout()
    data = _png(figure)
    plt.close(figure)
    return data


if __name__ == "__main__":
    main()
