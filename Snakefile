# shardmap's workloads as one Snakemake workflow. Snakemake orders the steps; every fan-out over
# items (files, photos, samples) is a shardmap run, journaled under --state-dir, its results in
# AWS's ResultWriter layout. Targets:
#
#   snakemake -c2                 # = all: every workload below
#   snakemake -c2 genomics        # sample data -> qc -> map -> sort -> index -> call -> report
#   snakemake -c2 demo            # also: images, leads, taxi
#   snakemake -c2 genomics --config 'genomics={count: 2, corrupt: true}'
#   snakemake -c2 all --config base=s3://bucket/prefix --storage-s3-endpoint-url http://...
#
# Layout under `base` (workflow/config.yaml: a folder, or s3://bucket/prefix):
#
#   samples/<workload>.json            the sample generator's summary (ground truth included)
#   data/<workload>/                   the sample data (genomics: data/genomics/samples.csv,...)
#   results/smk-<run>/manifest.json    each shardmap run's ResultWriter output, the rule output
#   results/genomics/<sample>/         what the genomics steps write ({Dest}/genomics/)
#   reports/genomics/                  report.json (recall, precision), qc.png, variants.png
#
# A rule's run id is fixed (smk-<pipeline>, smk-genomics-<step>), so its output is a known
# manifest; when snakemake reruns a rule, `workflow/tasks.py fresh` first clears the earlier
# run's journal and results. On S3 every input and output is a storage file that snakemake
# does not copy (retrieve=False): shardmap reads and writes the bucket itself, and snakemake
# checks and dates the objects through snakemake-storage-plugin-s3.

import os
import re
import shlex
import sys
from pathlib import Path


configfile: os.path.join(workflow.basedir, "workflow", "config.yaml")


ROOT = Path(workflow.basedir)
PIPELINES = ROOT / "pipelines"
TASKS = ROOT / "workflow" / "tasks.py"
PLOT = ROOT / "workflow" / "plot_genomics.py"
PYTHON = sys.executable
_installed = Path(sys.executable).with_name("shardmap")
SHARDMAP = str(_installed) if _installed.exists() else "shardmap"

# Like snakemake's own paths, `base` goes under --default-storage-prefix when one is given.
BASE = str(config["base"]).rstrip("/") or "."
_prefix = workflow.storage_settings.default_storage_prefix
if _prefix and "://" not in BASE and not os.path.isabs(BASE):
    BASE = f"{_prefix.rstrip('/')}/{BASE}"
REMOTE = "://" in BASE
STATE = config["state_dir"] or os.environ.get("SHARDMAP_STATE_DIR") or ".shardmap"
DEST = f"{BASE}/results"
THREADS = int(config["threads"])

STEPS = ["qc", "map", "sort", "index", "call"]  # genomics, in order
RUNS = {  # the other workloads: pipeline -> the sample data it runs over
    "demo": "demo",
    "images": "images",
    "leads": "leads",
    "taxi-stats": "taxi",
    "taxi-etl": "taxi",
}
GENOMICS = config["genomics"]
TRUTH = not GENOMICS.get("source")  # own sample data, so the planted variants are known


def url(path):
    """Where shardmap and the helper scripts read and write ``path``."""
    return f"{BASE}/{path}"


def io(path):
    """``path`` as snakemake tracks it: a storage object on S3, which the jobs reach directly."""
    return storage(url(path), retrieve=False) if REMOTE else url(path)


def tracked(location):
    """A URL or path from the configuration, as an input."""
    return storage(location, retrieve=False) if "://" in location else location


SAMPLES = GENOMICS.get("source") or url("data/genomics/samples.csv")


def manifest(run_id):
    return io(f"results/{run_id}/manifest.json")


# One shardmap run, after clearing an earlier run of the same id. What decides the results is
# in params (a change reruns the rule); where the journal goes and which executor runs the
# batches are not.
EXECUTOR = config["executor"]
SHARDMAP_RUN = (
    "{PYTHON:q} {TASKS:q} fresh {STATE:q} {params.run_id} {DEST:q}"
    " && {SHARDMAP:q} --state-dir {STATE:q} run {input.pipeline:q} --source {params.source:q}"
    " --dest {DEST:q} --run-id {params.run_id} --executor {EXECUTOR} {params.worker}"
)


# The storage plugin takes --storage-s3-endpoint-url/-access-key/-secret-key; the shardmap runs
# (boto3, s3fs) take the same from AWS_* variables, which the jobs inherit from here.
if REMOTE:
    _tagged = (workflow.storage_provider_settings or {}).get("s3")
    _s3 = _tagged.get_settings() if _tagged is not None else None
    for _var, _field in (
        ("AWS_ENDPOINT_URL", "endpoint_url"),
        ("AWS_ACCESS_KEY_ID", "access_key"),
        ("AWS_SECRET_ACCESS_KEY", "secret_key"),
        ("AWS_SESSION_TOKEN", "token"),
    ):
        if getattr(_s3, _field, None):
            os.environ[_var] = getattr(_s3, _field)
    if getattr(_s3, "region", None):
        os.environ.setdefault("AWS_DEFAULT_REGION", _s3.region)


TARGETS = {
    "demo": [manifest("smk-demo")],
    "images": [manifest("smk-images")],
    "leads": [manifest("smk-leads")],
    "taxi": [manifest("smk-taxi-stats"), manifest("smk-taxi-etl")],
    "genomics": [
        io(f"reports/genomics/{name}") for name in ("report.json", "qc.png", "variants.png")
    ],
}


localrules:
    all,
    demo,
    images,
    leads,
    taxi,
    genomics,


rule all:
    input:
        [target for targets in TARGETS.values() for target in targets],


rule demo:
    input:
        TARGETS["demo"],


rule images:
    input:
        TARGETS["images"],


rule leads:
    input:
        TARGETS["leads"],


rule taxi:
    input:
        TARGETS["taxi"],


rule genomics:
    input:
        TARGETS["genomics"],


rule sample:
    output:
        io("samples/{workload}.json"),
    wildcard_constraints:
        workload="demo|images|leads|taxi",
    params:
        data=lambda w: url(f"data/{w.workload}"),
        size=lambda w: config[w.workload]["count"],
        seed=config["seed"],
    shell:
        "{PYTHON:q} {TASKS:q} sample {wildcards.workload} {params.data:q} {output:q}"
        " --count {params.size} --seed {params.seed}"


# leads moves its exports to {Dest}/leads/archive/ when it succeeds: to run it again on fresh
# data, rerun its sample too (snakemake leads --forcerun sample).
rule run:
    input:
        summary=lambda w: io(f"samples/{RUNS[w.pipeline]}.json"),
        pipeline=local(f"{PIPELINES}/{{pipeline}}.yaml"),
    output:
        manifest("smk-{pipeline}"),
    wildcard_constraints:
        pipeline="|".join(map(re.escape, RUNS)),
    threads: THREADS
    params:
        run_id="smk-{pipeline}",
        source=lambda w: url(f"data/{RUNS[w.pipeline]}/"),
        worker="",
    shell:
        SHARDMAP_RUN


# -- genomics: each step is one shardmap run over samples.csv, one sample per batch ----------


rule genomics_sample_data:
    output:
        summary=io("samples/genomics.json"),
        manifest=io("data/genomics/samples.csv"),
    params:
        data=url("data/genomics"),
        size=GENOMICS["count"],
        seed=config["seed"],
        corrupt="--corrupt" if GENOMICS.get("corrupt") else "",
    shell:
        "{PYTHON:q} {TASKS:q} sample genomics {params.data:q} {output.summary:q}"
        " --count {params.size} --seed {params.seed} {params.corrupt}"


def previous_step(wildcards):
    number = STEPS.index(wildcards.step)
    return [manifest(f"smk-genomics-{STEPS[number - 1]}")] if number else []


rule genomics_step:
    input:
        samples=io("data/genomics/samples.csv") if TRUTH else tracked(SAMPLES),
        previous=previous_step,
        pipeline=local(f"{PIPELINES}/genomics.yaml"),
    output:
        manifest("smk-genomics-{step}"),
    wildcard_constraints:
        step="|".join(STEPS),
    threads: THREADS
    params:
        run_id="smk-genomics-{step}",
        source=SAMPLES,
        worker="--worker genomics-{step}",
    shell:
        SHARDMAP_RUN


rule genomics_report:
    input:
        steps=[manifest(f"smk-genomics-{step}") for step in STEPS],
        truth=[io("samples/genomics.json")] if TRUTH else [],
        script=local(str(PLOT)),
    output:
        report=io("reports/genomics/report.json"),
        qc=io("reports/genomics/qc.png"),
        variants=io("reports/genomics/variants.png"),
    params:
        out=url("reports/genomics"),
        truth=f"--truth {shlex.quote(url('samples/genomics.json'))}" if TRUTH else "",
        manifests=" ".join(
            f"--manifest {shlex.quote(url(f'results/smk-genomics-{step}/manifest.json'))}"
            for step in STEPS
        ),
    shell:
        "{PYTHON:q} {input.script:q} {DEST:q} {params.out:q} {params.truth} {params.manifests}"
