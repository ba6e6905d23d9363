# One evaluator for every method (CPU), then all runs into one table.


rule evaluate:
    group:
        "run"
    conda:
        "../../envs/uadflows.yaml"
    input:
        spec=rules.spec.output[0],
        summary=rules.train.output.summary,
        scores=rules.score.output[0],
    # also writes records.npz / records.csv beside metrics.json (per-image records for the
    # bootstrap, docs/statistics.md); not declared: a failed run has none
    output:
        f"{RUN}/metrics.json",
    log:
        f"{LOGS}/evaluate/{{dataset}}/{{category}}/{{model}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{dataset}}/{{category}}/{{model}}/seed{{seed}}.tsv"
    shell:
        "uadflows evaluate --spec {input.spec} --summary {input.summary} --scores {input.scores} --out {output} > {log} 2>&1"


rule aggregate:
    conda:
        "../../envs/uadflows.yaml"
    input:
        all_metrics(),
    output:
        f"{R}/metrics.csv",
    log:
        f"{LOGS}/aggregate.log",
    benchmark:
        f"{BENCH}/aggregate.tsv"
    shell:
        "uadflows aggregate --out {output} {input} > {log} 2>&1"
