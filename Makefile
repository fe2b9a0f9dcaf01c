# The README's two commands do all set-up on a fresh machine:
#   make demo   — create .venv, install, run opscale on its embedded default (SQLite + in-process counters)
#   make test   — create .venv, install with test extras, run the whole suite
# `pip install .` alone is the client SDK; `.[server]` the CLI, services and agent; `.[plots]` PNG plots.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo run test test-fast fuzz protos check-protos lint buf-lint go-check typecheck bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[server,plots,test]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/opscale demo

run: setup
	$(BIN)/opscale up

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -x tests/unit

# The fuzz suites at scale: every RPC (typed and raw frames, both backends), the CLI's YAML, engine
# metrics text through the scrape path, trace files; outcome counts land in out/fuzz/report.json.
FUZZ_SCALE ?= 16
fuzz: setup
	rm -f out/fuzz/report.json
	OPSCALE_FUZZ_SCALE=$(FUZZ_SCALE) OPSCALE_FUZZ_REPORT=out/fuzz/report.json $(BIN)/python -m pytest -q \
		tests/component/test_fuzz_rpcs.py tests/unit/test_cli_bad_input.py tests/unit/test_scrape_fuzz.py \
		tests/unit/test_sim_traces_fuzz.py
	$(BIN)/python scripts/fuzz_report.py out/fuzz/report.json

protos: setup
	$(BIN)/python scripts/protos.py

check-protos: setup
	$(BIN)/python scripts/protos.py --check

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(MAKE) --no-print-directory buf-lint

# buf (the npm registry's @bufbuild/buf, pinned) into ./node_modules, when npm exists: `buf lint` holds
# protos/ to buf's STANDARD rules (buf.yaml), `buf breaking` compares the wire/JSON contract with main.
BUF_VERSION ?= 1.75.0
BUF := node_modules/.bin/buf
$(BUF):
	npm install --prefix $(CURDIR) --no-save --no-audit --no-fund --loglevel=error @bufbuild/buf@$(BUF_VERSION)

buf-lint:
	@if ! command -v npm >/dev/null 2>&1 && [ ! -x $(BUF) ]; then \
		echo "buf lint skipped: npm is not installed (it installs @bufbuild/buf into ./node_modules)"; \
	else \
		{ [ -x $(BUF) ] || $(MAKE) --no-print-directory $(BUF); } && $(BUF) lint && \
		if git rev-parse --verify --quiet main >/dev/null; then \
			$(BUF) breaking --against '.git#branch=main,subdir=protos'; \
		else echo "buf breaking skipped: no local branch main to compare with"; fi; \
	fi

# Go stubs generated from protos/ must compile (go_package options, imports); skipped without Go.
go-check:
	@if command -v go >/dev/null 2>&1; then { [ -x $(BUF) ] || $(MAKE) --no-print-directory $(BUF); } && scripts/go_check.sh $(BUF); \
	else echo "go-check skipped: no Go toolchain on this machine"; fi

typecheck: setup
	$(BIN)/mypy opscale

bench: setup
	@for script in benchmarks/*.py; do [ -e "$$script" ] || continue; echo "== $$script"; $(BIN)/python "$$script" || exit 1; done

# The image's locked dependency sets (deploy/Dockerfile installs them with --require-hashes): the server
# extra, and the build backend the wheel is built with. Re-run after changing dependencies in pyproject.toml.
UV_LOCK := $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 --python-platform linux \
	--custom-compile-command "make lock"
lock: setup
	$(BIN)/python -m pip install --quiet uv
	$(UV_LOCK) pyproject.toml --extra server -o deploy/requirements.lock
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
		| $(UV_LOCK) - -o deploy/build-requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .opscale node_modules
