# neuron-miner: `make demo` and `make test` set up a fresh machine and run. See README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

DEMO_CORPUS ?= data/default
DEMO_JOB    ?= jobs/demo.yaml
DEMO_RANDOM_JOB ?= jobs/demo-random.yaml

.PHONY: venv demo demo-compare test test-fast lint corpus bench clean schema browser

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
	$(BIN)/miner run $(DEMO_RANDOM_JOB)
	$(BIN)/miner compare runs/demo runs/demo-random --out reports/compare --force
	$(BIN)/miner report runs/demo --model --unit 6:101 --out reports/demo --force
	@echo
	@echo "Model overview: $(CURDIR)/reports/demo/model.html   (pre-trained vs random-init: reports/compare/comparison.json)"
	@echo "Browse every unit, search, try your text:  $(BIN)/miner serve runs/demo runs/demo-random"
	@echo "Try:  $(BIN)/miner sql runs/demo \"SELECT value AS domain, count(*) AS units FROM unit_metadata WHERE field = 'domain' AND direction = 'top' AND share >= 0.5 GROUP BY 1 ORDER BY 2 DESC\""

# Pre-trained, random-init and fine-tuned MiniLM side by side (Oba et al. 2021, figures 3-5); not part of `make demo`.
# The fine-tuned model (binary tweet sentiment, a few minutes of CPU) is built once: a folder with
# miner_finetune.json is complete. `miner run` skips the stages a run has finished.
FINETUNED ?= models/minilm-sentiment
DEMO_FINETUNED_JOB ?= jobs/demo-finetuned.yaml

demo-compare: corpus
	test -f $(FINETUNED)/miner_finetune.json || \
	  $(BIN)/python examples/finetune_sentiment.py --corpus $(DEMO_CORPUS) --source tweets --out $(FINETUNED) --force
	$(BIN)/miner run $(DEMO_JOB)
	$(BIN)/miner run $(DEMO_RANDOM_JOB)
	$(BIN)/miner run $(DEMO_FINETUNED_JOB)
	$(BIN)/miner compare runs/demo runs/demo-random runs/demo-finetuned --out reports/compare3 --force
	$(BIN)/miner match runs/demo-finetuned runs/demo runs/demo-random
	$(BIN)/miner report runs/demo-finetuned --model --unit 6:101 --out reports/demo-finetuned --force
	@echo
	@echo "Pre-trained vs random-init vs fine-tuned: $(CURDIR)/reports/compare3/comparison.json"
	@echo "Fine-tuned model overview (ablation, redundancy, matches): $(CURDIR)/reports/demo-finetuned/model.html"
	@echo "Try:  $(BIN)/miner sql runs/demo-finetuned \"SELECT u.layer, count(*) AS no_counterpart FROM unit_matches m JOIN units u USING (unit_id) WHERE m.other_name = 'demo' AND abs(m.corr) < 0.5 GROUP BY 1 ORDER BY 1\""

# Headless Chromium and its driver for the report and `miner serve` browser tests (Debian's packages; the tests
# skip without them).
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  chromium-driver >/dev/null) || echo "chromium / chromedriver not installed: browser tests will be skipped"; }

# The worked examples (>>> doctests) of the pure algorithm modules.
DOCTESTS := miner/signatures/patterns.py miner/signatures/features.py miner/signatures/fasttext.py \
            miner/signatures/selectivity.py \
            miner/cluster/tasks.py miner/analysis/clustering.py miner/analysis/rankings.py miner/analysis/compare.py \
            miner/analysis/plots.py miner/query miner/report/plots.py miner/probing/align.py miner/probing/examples.py \
            miner/probing/probe.py miner/probing/rankings.py miner/probing/evaluate.py miner/probing/stage.py \
            miner/mining/moments.py miner/mining/sample.py miner/correlate/correlation.py miner/correlate/redundancy.py \
            miner/intervene/steering.py miner/intervene/effects.py miner/intervene/units.py \
            miner/intervene/hooks.py miner/intervene/plots.py miner/intervene/views.py \
            miner/intervene/probe_effects.py miner/model/heads.py miner/model/loading.py miner/hashing.py \
            miner/report/causal/queries.py miner/intervene/logits.py miner/mining/batches.py miner/corpus/text.py \
            miner/explain/formulas.py miner/explain/scores.py miner/explain/held_out.py miner/signatures/scoring.py

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider --doctest-modules $(DOCTESTS)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# Lint (ruff: pyflakes, import order, no print in library code) and type check (mypy), as configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check miner tests benchmarks
	$(BIN)/mypy

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --doctest-modules $(DOCTESTS)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

schema: $(STAMP)
	$(BIN)/python -m miner.config_export

clean:
	rm -rf $(VENV) build *.egg-info
