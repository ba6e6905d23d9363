# Demo data generation and dataset verification (local: cheap, and must fail before any
# GPU job is submitted).


rule demo_data:
    conda:
        "../../envs/uadflows.yaml"
    output:
        f"{R}/data/{{dataset}}.demo.json",
    params:
        root=lambda w: PLAN.datasets[w.dataset].root,
        categories=lambda w: " ".join(PLAN.datasets[w.dataset].categories),
        options=lambda w: " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in PLAN.datasets[w.dataset].demo.model_dump(exclude_none=True).items()
        ),
    log:
        f"{LOGS}/demo_data/{{dataset}}.log",
    benchmark:
        f"{BENCH}/demo_data/{{dataset}}.tsv"
    shell:
        "(uadflows demo-data --root {params.root} --categories {params.categories} {params.options}"
        " && echo '{{\"root\": \"{params.root}\"}}' > {output}) > {log} 2>&1"


rule verify:
    conda:
        "../../envs/uadflows.yaml"
    input:
        dataset_input,
    output:
        index_csv("{dataset}", "{category}"),
    params:
        fmt=lambda w: PLAN.datasets[w.dataset].format,
        root=lambda w: PLAN.datasets[w.dataset].root,
        index_dir=lambda w: f"{R}/index/{w.dataset}",
        # the held-out validation split (a changed fraction or seed reruns the index)
        validation=lambda w: PLAN.validation_args(w.dataset),
    log:
        f"{LOGS}/verify/{{dataset}}/{{category}}.log",
    benchmark:
        f"{BENCH}/verify/{{dataset}}/{{category}}.tsv"
    shell:
        "uadflows verify --dataset {params.fmt} --root {params.root} --category {wildcards.category}"
        " --index-dir {params.index_dir} {params.validation} > {log} 2>&1"
