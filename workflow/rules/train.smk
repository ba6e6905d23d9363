# Training from the feature cache, then scoring the test split (GPU jobs).


rule train:
    group:
        "run"
    resources:
        mem_mb=gpu_mem_mb,
        runtime=gpu_runtime(360),
    conda:
        "../../envs/uadflows.yaml"
    input:
        features=features_dir,
        index=lambda w: index_csv(w.dataset, w.category),
    output:
        model=f"{R}/runs/{{dataset}}/{{category}}/{{model}}/seed{{seed}}/model.pt",
        history=f"{R}/runs/{{dataset}}/{{category}}/{{model}}/seed{{seed}}/history.csv",
    params:
        spec=spec_json,
        extractor=run_extractor_json,
        out=lambda w, output: os.path.dirname(output.model),
    threads: 4
    log:
        f"{LOGS}/train/{{dataset}}/{{category}}/{{model}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/train/{{dataset}}/{{category}}/{{model}}/seed{{seed}}.tsv"
    shell:
        "HF_HUB_OFFLINE=1 uadflows train --threads {threads} --spec {params.spec:q} --features {input.features}"
        " --index {input.index} --extractor {params.extractor:q} --out {params.out} > {log} 2>&1"


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
        f"{R}/runs/{{dataset}}/{{category}}/{{model}}/seed{{seed}}/scores.npz",
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
