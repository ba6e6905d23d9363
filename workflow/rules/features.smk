# Weight prefetch (local: the submit host has internet, compute nodes may not) and the
# feature cache (GPU), shared by every model and seed with the same extractor.


rule weights:
    conda:
        "../../envs/uadflows.yaml"
    output:
        f"{PLAN.weights_cache}/{{backbone}}.json",
    params:
        cache=PLAN.weights_cache,
    log:
        f"{LOGS}/weights/{{backbone}}.log",
    benchmark:
        f"{BENCH}/weights/{{backbone}}.tsv"
    shell:
        "uadflows weights --backbone {wildcards.backbone} --cache {params.cache}"
        " --marker {output} > {log} 2>&1"


rule extract:
    resources:
        mem_mb=gpu_mem_mb,
        runtime=gpu_runtime(60),
    conda:
        "../../envs/uadflows.yaml"
    input:
        index=lambda w: index_csv(w.dataset, w.category),
        verified=dataset_indexes,
        weights=weights_input,
    output:
        directory(f"{R}/features/{{dataset}}/{{category}}/{{extractor}}"),
    params:
        extractor=lambda w: json.dumps(extractor_args(w)),
        device=PLAN.device,
    threads: 4
    log:
        f"{LOGS}/extract/{{dataset}}/{{category}}/{{extractor}}.log",
    benchmark:
        f"{BENCH}/extract/{{dataset}}/{{category}}/{{extractor}}.tsv"
    shell:
        "HF_HUB_OFFLINE=1 uadflows extract --threads {threads} --index {input.index}"
        " --extractor {params.extractor:q} --device {params.device} --out {output} > {log} 2>&1"
