# Two entry points (README): `make run` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATE := .palyra
LISTEN ?= 127.0.0.1:7142

.PHONY: run test lint bench clean install screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default: apply routines.d/ into ./.palyra/ and serve it. palyra-ops
# creates ./.palyra itself (0700); the daemon writes ./.palyra/daemon.json, which is how
# `palyra-ops cron status` in another shell of this directory finds it (docs/daemon.md).
run: $(STAMP)
	PALYRA_STATE_ROOT=$(STATE) $(BIN)/palyra-ops validate routines.d
	PALYRA_STATE_ROOT=$(STATE) $(BIN)/palyra-ops apply --dir routines.d --journal $(STATE)/journal.sqlite3 --auto-approve
	PALYRA_STATE_ROOT=$(STATE) $(BIN)/palyra-ops daemon --dir routines.d --journal $(STATE)/journal.sqlite3 --listen $(LISTEN) --watch

lint: $(STAMP)
	$(BIN)/ruff check palyra_ops tests bench

test: $(STAMP)
	./tools/system-deps.sh
	$(BIN)/ruff check palyra_ops tests bench
	$(BIN)/python -m pytest -p no:cacheprovider

# The console pictures in docs/img/ come from the browser tests; a plain `make test` leaves them alone.
screenshots: $(STAMP)
	PALYRA_UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest -p no:cacheprovider tests/test_ui_browser.py

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(STATE) .pytest_cache .ruff_cache *.egg-info
