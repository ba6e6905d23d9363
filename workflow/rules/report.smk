# Tables, figures and MLflow (local: the submit host holds the store; one writer only).


rule report:
    conda:
        "../../envs/uadflows.yaml"
    input:
        f"{R}/metrics.csv",
    output:
        tables=f"{R}/report/tables/tables.tex",
        figures=directory(f"{R}/report/figures"),
    params:
        out=lambda w, output: os.path.dirname(os.path.dirname(output.tables)),
        figures="" if PLAN.figures else "--no-figures",
        statistics=f"--spread {PLAN.spread} --resamples {PLAN.statistics['resamples']}"
        f" --seed {PLAN.statistics['seed']}",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    shell:
        "(mkdir -p {output.figures} && uadflows report --metrics {input} --out {params.out}"
        " {params.figures} {params.statistics}) > {log} 2>&1"


rule mlflow:
    conda:
        "../../envs/uadflows.yaml"
    input:
        metrics=f"{R}/metrics.csv",
        tables=rules.report.output.tables,
        figures=rules.report.output.figures,
    output:
        f"{R}/mlflow.json",
    params:
        uri=PLAN.tracking_uri,
        experiment=PLAN.experiment,
        sweep=PLAN.sweep,
        tables=lambda w, input: os.path.dirname(input.tables),
    log:
        f"{LOGS}/mlflow.log",
    benchmark:
        f"{BENCH}/mlflow.tsv"
    shell:
        "uadflows mlflow --metrics {input.metrics} --tracking-uri {params.uri:q}"
        " --experiment {params.experiment:q} --sweep {params.sweep} --tables {params.tables}"
        " --figures {input.figures} --marker {output} > {log} 2>&1"
