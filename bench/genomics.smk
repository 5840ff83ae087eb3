# The baseline of bench/genomics.py: the genomics steps as Snakemake's own per-sample rules, one
# job per sample and step ({sample} wildcards), each job a fresh Python process calling the same
# step function as the shardmap workers (`python bench/genomics.py --step STEP --sample NAME`).
# Snakemake -c2 runs the jobs of different samples side by side.
#
#   snakemake -s bench/genomics.smk -c2 --config data=DATA_FOLDER dest=RESULTS_FOLDER
#
# DATA_FOLDER is what `shardmap sample genomics` wrote (samples.csv, reads/, reference/); the
# outputs are the ones the shardmap steps write, in DEST/genomics/<sample>/.

import csv
import shlex
import sys
from pathlib import Path

DATA = config["data"].rstrip("/")
DEST = config["dest"].rstrip("/")
BENCH = Path(workflow.basedir) / "genomics.py"
with open(f"{DATA}/samples.csv", newline="") as _f:
    ROWS = {row["sample"]: row for row in csv.DictReader(_f)}
OUT = f"{DEST}/genomics/{{sample}}"
REFERENCE = f"{DATA}/reference/lambda_virus.fa"
STEP = shlex.join([sys.executable, str(BENCH), "--data", DATA, "--dest", DEST])


def reads(wildcards):
    row = ROWS[wildcards.sample]
    return [f"{DATA}/{row['r1']}", f"{DATA}/{row['r2']}"]


rule all:
    input:
        expand(f"{OUT}/calls.vcf.gz", sample=ROWS),


rule qc:
    input:
        reads,
    output:
        f"{OUT}/qc.json",
    shell:
        "{STEP} --step qc --sample {wildcards.sample}"


rule map:
    input:
        reads,
        REFERENCE,
        f"{OUT}/qc.json",  # the order of the top-level Snakefile: qc, then map
    output:
        f"{OUT}/aligned.bam",
        f"{OUT}/map.json",
    shell:
        "{STEP} --step map --sample {wildcards.sample}"


rule sort:
    input:
        f"{OUT}/aligned.bam",
    output:
        f"{OUT}/sorted.bam",
    shell:
        "{STEP} --step sort --sample {wildcards.sample}"


rule index:
    input:
        f"{OUT}/sorted.bam",
    output:
        f"{OUT}/sorted.bam.bai",
    shell:
        "{STEP} --step index --sample {wildcards.sample}"


rule call:
    input:
        f"{OUT}/sorted.bam",
        f"{OUT}/sorted.bam.bai",
        REFERENCE,
    output:
        f"{OUT}/calls.vcf.gz",
        f"{OUT}/calls.vcf.gz.csi",
    shell:
        "{STEP} --step call --sample {wildcards.sample}"
