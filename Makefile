# Set-up and entry points. `make demo` and `make test` do all the set-up themselves.
# TORCH_SPEC: what installs torch + torchvision (timm needs both). The default pins the
# builds these project machines install from local files; elsewhere e.g.
#   make demo TORCH_SPEC="torch torchvision"   or a CUDA index of your choice.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
CORES ?= 2
# pytest-xdist workers of `make test`: more than the cores, because many tests wait on
# subprocesses (Snakemake, SLURM, servers); 0 runs the suite in one process.
TEST_WORKERS ?= 4
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install demo test test-fast lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: install
	snakemake --cores $(CORES) --printshellcmds
	@echo
	@echo "table:   results/report/tables/tables.tex (summary: results/report/tables/summary.md)"
	@echo "figures: results/report/figures/"
	@echo "metrics: results/metrics.csv"
	@echo "MLflow:  sqlite:///mlflow.db  (open with: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db)"

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

test-fast: install
	$(PY) -m pytest -q -m "not slow and not slurm"

lint: install
	snakemake --lint

clean:
	rm -rf results .snakemake mlflow.db mlruns
