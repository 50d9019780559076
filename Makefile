# One-command set-up: every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The reference comparisons: (a) the course protocol at default strengths, (b) every setting at its
# validated best strength under the converged protocol, on MNIST, each with the first wave's techniques (the lists
# keep the committed results reproducible); (c) the same as (b) for every technique alone on Fashion-MNIST; (d) the
# cnn with the techniques made for it and those that hurt the MLP, on 5,000 Fashion-MNIST images for 20 epochs (what
# fits 2 hours on 2 cores: 2 h 0 min 13 s on an empty store; the cnn is faster on TensorFlow on a CPU). All four add
# seeds until each verdict is decided; (b), (c) and (d) also search the learning rate for every arm and the baseline.
# Their runs are kept outside the work tree.
STORE ?= $(HOME)/.cache/regbench/reference.sqlite
REFERENCE := --technique l1,l2,weight-decay,dropout,batchnorm,early-stopping,max-norm,dropout+l2,batchnorm+dropout \
	--seeds auto --backend jax --out results
TUNED := --technique l1,l2,weight-decay,dropout,batchnorm,early-stopping,max-norm,dropout+l2,dropout+max-norm,batchnorm+dropout \
	--protocol converged --tune --tune-shared lr --seeds auto --backend jax --out results/tuned
FASHION := --dataset fashion-mnist --technique all --protocol converged --tune --tune-shared lr --seeds auto --backend jax \
	--out results/fashion-mnist
CNN := --dataset fashion-mnist --architecture cnn --technique augment,spatial-dropout,dropout,batchnorm,label-smoothing,mixup \
	--train-size 5000 --protocol converged --epochs 20 --tune --trials 6 --race-seeds 4 --tune-shared lr \
	--seeds auto --max-seeds 15 --backend tensorflow --out results/cnn-fashion-mnist
# The reference runs, compressed in the repository: a machine without $(STORE) starts from them, so that `make report`
# re-renders what is stored and trains only what is missing (a long regeneration resumes on a new machine).
SNAPSHOT := results/store/reference.sqlite.gz
# Full Fashion-MNIST: Keras' idx directory (or an .npz in Keras' layout).
FASHION_DATA ?= $(HOME)/.keras/datasets/fashion-mnist
STUDY_STORE ?= $(HOME)/.cache/regbench/studies.sqlite  # the studies' runs, also outside the work tree
# Runs trained at once by `make run`, `make report` and `make studies`: one worker process per core.
JOBS ?= $(shell nproc)

.PHONY: install run report snapshot studies bench check docs docs-serve test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[jax,test,notebook,bench,tensorboard,mlflow,docs,check]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/regbench compare --technique dropout --jobs $(JOBS)

# The reference suite on full MNIST ($$REGBENCH_DATA) and full Fashion-MNIST (FASHION_DATA); reuses finished runs.
report: $(STAMP) $(STORE)
	$(BIN)/regbench compare $(REFERENCE) --jobs $(JOBS) --store $(STORE)
	$(BIN)/regbench compare $(TUNED) --jobs $(JOBS) --store $(STORE)
	$(BIN)/regbench compare $(FASHION) --data $(FASHION_DATA) --jobs $(JOBS) --store $(STORE)
	$(BIN)/regbench compare $(CNN) --data $(FASHION_DATA) --jobs $(JOBS) --store $(STORE)

$(STORE):
	mkdir -p $(dir $(STORE))
	if [ -f $(SNAPSHOT) ]; then gunzip -c $(SNAPSHOT) > $(STORE).partial && mv $(STORE).partial $(STORE); fi

# Write $(STORE) into the snapshot (SQLite's online backup: consistent while a `make report` writes to it).
snapshot: $(STAMP)
	mkdir -p $(dir $(SNAPSHOT))
	$(BIN)/python -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))" \
		$(STORE) $(SNAPSHOT:.gz=.partial)
	gzip -9 -c $(SNAPSHOT:.gz=.partial) > $(SNAPSHOT) && rm $(SNAPSHOT:.gz=.partial)

# Every study at full size on full MNIST (needs $$REGBENCH_DATA); reuses finished runs.
studies: $(STAMP)
	mkdir -p $(dir $(STUDY_STORE))
	$(BIN)/regbench study all --backend jax --jobs $(JOBS) --store $(STUDY_STORE)

# Speed against the plain Keras script on full MNIST (needs $$REGBENCH_DATA) -> benchmarks/RESULTS.md.
bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py

# One pytest worker per core and one more (the suite waits much of its time on the processes it starts: 4m25s
# against 4m45s-5m16s with one per core, on 2 cores); each test file stays on one worker (the studies files share
# one quick run each), handed out in tests/conftest.py's order (slowest first) rather than by their number of tests.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $$(( $$(nproc) + 1 )) --dist loadfile --no-loadscope-reorder

# The linter and the type checker, as configured in pyproject.toml (make test runs them too, in tests/test_checks.py,
# beside the other tests; pre-commit runs them before each commit).
check: $(STAMP)
	$(BIN)/ruff check regbench tests benchmarks
	$(BIN)/mypy

# The documentation site (MkDocs Material) -> site/; the test suite builds it with --strict too.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache site
