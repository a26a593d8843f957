# Two commands do all the set-up on a fresh machine with Python 3.11 and make:
#   make demo   generate the built-in demo dataset and run the main job on it
#   make test   run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo

.PHONY: demo test install bench lint clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/centile generate --customers 50000 --seed 7 --out $(DEMO)/data
	$(BIN)/centile run -c engine/examples/demo.toml --out $(DEMO)/out
	@echo "Results are in $(DEMO)/out/ (Parquet tables, manifest.json, centile.log)."
	@echo "Open the report: $(abspath $(DEMO))/out/report.html"
	@echo "Explore them with: $(BIN)/centile sql \"SELECT club, tier, count(*) FROM clubs GROUP BY ALL ORDER BY ALL\" --results $(DEMO)/out"

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check engine kernels tests benchmarks

# bench_run.py runs centile bench at 1M customers here; the README's scaling table also has 2M and
# 5M: python benchmarks/bench_run.py --sizes 1000000 2000000 5000000 (about an hour)
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[bench]"
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_clubs.py
	$(BIN)/python benchmarks/bench_segments.py
	$(BIN)/python benchmarks/bench_clv.py
	$(BIN)/python benchmarks/bench_uplift.py
	$(BIN)/python benchmarks/bench_clubs_e2e.py
	$(BIN)/python benchmarks/bench_run.py --sizes 1000000

clean:
	rm -rf $(VENV) $(DEMO) build dist *.egg-info .pytest_cache .hypothesis
