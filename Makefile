# neuron-miner: `make demo` and `make test` set up a fresh machine and run. See README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

DEMO_CORPUS ?= data/default
DEMO_JOB    ?= jobs/demo.yaml

.PHONY: venv demo test test-fast corpus bench clean schema

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[test]"
	$(BIN)/pip check
	touch $(STAMP)

corpus: $(STAMP)
	$(BIN)/miner corpus fetch default --out $(DEMO_CORPUS) --cache cache/sources

demo: corpus
	$(BIN)/miner corpus info $(DEMO_CORPUS)
	$(BIN)/miner run $(DEMO_JOB)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

schema: $(STAMP)
	$(BIN)/python -m miner.schema_export

clean:
	rm -rf $(VENV) build *.egg-info
