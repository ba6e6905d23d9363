# uadflows: normalizing-flow anomaly detection benchmark.
#   snakemake --cores 2                      the demo (config.yaml), locally
#   snakemake --profile slurm --cores 64     on a SLURM cluster (see README)
#   snakemake --configfile configs/paper/fastflow.yaml ...   a paper's tables
from snakemake.utils import min_version, validate

min_version("8.10")


# The demo config, unless the command line names one (Snakemake would merge the two).
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"



validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# Cheap steps, and those that need the submit host (internet, the MLflow store):
# they never become cluster jobs.
localrules:
    all,
    demo_data,
    spec,
    verify,
    weights,
    aggregate,
    report,
    mlflow,


rule all:
    input:
        f"{R}/metrics.csv",
        f"{R}/report/tables/tables.tex",
        f"{R}/mlflow.json",
    default_target: True
