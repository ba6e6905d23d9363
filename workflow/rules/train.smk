# The job spec (local), training from the feature cache, then scoring the test split (GPU jobs).


rule spec:
    output:
        f"{RUN}/spec.json",
    params:
        # a changed config changes the digest: Snakemake reruns the spec and what follows
        digest=lambda w: job_spec(w).digest(),
    log:
        f"{LOGS}/spec/{{dataset}}/{{category}}/{{model}}/seed{{seed}}.log",
    run:
        write_spec(wildcards, output[0], log[0])


rule train:
    group:
        "run"
    resources:
        mem_mb=gpu_mem_mb,
        runtime=gpu_runtime(360),
    conda:
        "../../envs/uadflows.yaml"
    input:
        spec=rules.spec.output[0],
        features=features_dir,
        index=lambda w: index_csv(w.dataset, w.category),
    output:
        model=f"{RUN}/model.pt",
        history=f"{RUN}/history.csv",
        summary=f"{RUN}/summary.json",
    params:
        out=lambda w, output: os.path.dirname(output.model),
    threads: 4
    log:
        f"{LOGS}/train/{{dataset}}/{{category}}/{{model}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/train/{{dataset}}/{{category}}/{{model}}/seed{{seed}}.tsv"
    shell:
        "HF_HUB_OFFLINE=1 uadflows train --threads {threads} --spec {input.spec} --features {input.features}"
        " --index {input.index} --out {params.out} > {log} 2>&1"


rule score:
    group:
        "run"
    resources:
        mem_mb=gpu_mem_mb,
        runtime=gpu_runtime(30),
    conda:
        "../../envs/uadflows.yaml"
    input:
        model=rules.train.output.model,
        features=features_dir,
    output:
        f"{RUN}/scores.npz",
    params:
        device=PLAN.device,
    threads: 4
    log:
        f"{LOGS}/score/{{dataset}}/{{category}}/{{model}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/score/{{dataset}}/{{category}}/{{model}}/seed{{seed}}.tsv"
    shell:
        "uadflows score --threads {threads} --model {input.model} --features {input.features}"
        " --device {params.device} --out {output} > {log} 2>&1"
