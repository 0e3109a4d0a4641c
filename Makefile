# Two commands from nothing: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-tables lint typecheck check clean perf_analyzer system-deps crd-schemas

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps 'kserve>=0.13'  # its generated models validate InferenceServices
	$(BIN)/pip install --quiet --no-deps rapidocr-onnxruntime==1.4.4 silero-vad==6.2.3 ddddocr==1.6.1  # real models for tests/real_models: only their ONNX files are used
	touch $(STAMP)

demo: $(STAMP) system-deps crd-schemas
	$(BIN)/optiserve models build --out models
	$(BIN)/optiserve profile models/cnn.onnx --batch 1,4,16 --threads 1,2 --budget 3 \
		--precision fp32,int8-static --max-accuracy-drop 0.01 --serving -o profiles/demo-cnn --overwrite
	$(BIN)/optiserve predict profiles/demo-cnn --precision fp32 --threads 2 --max-batch 16 --max-delay-ms 5 \
		--rate 150 --p99-ms 100
	$(BIN)/optiserve plan --sla examples/sla.yaml -o profiles/demo-cnn/plan.json
	$(BIN)/optiserve emit profiles/demo-cnn/plan.json --target all -o deploy --model cnn=models/cnn.onnx
	$(BIN)/optiserve report profiles/demo-cnn --plan profiles/demo-cnn/plan.json -o reports/demo --title 'optiserve demo'

# Debian packages the tests drive for real (perf_analyzer's libb64, PostgreSQL, Node for the CRD schemas).
system-deps:
	scripts/system_deps.sh

# Triton's perf_analyzer for tests/serve/test_perf_analyzer.py, into .venv/perf_analyzer (ignored; idempotent):
# the binary from tritonclient 2.51's wheel, Debian's libb64-0d, PyPI's CUDA runtime library.
perf_analyzer: $(STAMP) system-deps
	scripts/perf_analyzer.sh $(VENV)/perf_analyzer

test: $(STAMP) system-deps perf_analyzer crd-schemas
	$(BIN)/ruff check optiserve tests benchmarks
	$(BIN)/mypy
	$(BIN)/mypy benchmarks/record.py benchmarks/tables.py scripts/bench_tables.py scripts/kernel_costs.py
	$(BIN)/pytest -q --durations=15  # the slowest tests, in every CI log: the run must stay under 30 min on either CPU

bench: $(STAMP)
	$(BIN)/pytest benchmarks -q -s --benchmark-columns=median,iqr,rounds
	$(BIN)/python scripts/bench_tables.py  # README tables from the records just written

bench-tables: $(STAMP)
	$(BIN)/python scripts/bench_tables.py

clean:
	rm -rf $(VENV) models .optiserve-cache deploy

# CRD schemas for offline validation of PrometheusRule, PodMonitor, AnalysisTemplate and Rollout
# (optiserve/emit/crd_schemas.py): the npm packages' generated validators, into .cache/npm (ignored).
CRD_SCHEMAS := .cache/npm/node_modules/@kubernetes-models/validate/dist/index.js  # the last file an install writes
crd-schemas: $(CRD_SCHEMAS)
$(CRD_SCHEMAS): | system-deps
	npm install --prefix .cache/npm --no-save --no-audit --no-fund --ignore-scripts \
		@kubernetes-models/prometheus-operator@6.0.0 @kubernetes-models/argo-rollouts@2.0.0
