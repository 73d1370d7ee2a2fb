# fsrouter: make install | make test | make lint | make bench
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PREFIX ?= /usr/local
SYSTEMD_DIR ?= /etc/systemd/system
CONFIG_DIR ?= /etc/fsrouter

.PHONY: venv dev test lint imports bench install uninstall clean

venv: $(VENV)/.test-deps

# A stamp, not the fsrouter script: the README's first command makes a venv without the test tools.
$(VENV)/.test-deps: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

dev: venv

test: venv
	$(BIN)/python -m pytest

lint: venv imports
	$(BIN)/pip install -q ruff
	$(BIN)/ruff check fsrouter tests bench soak fuzz

# The layers (setup.cfg's import-linter contracts; README, "Architecture").
imports: venv
	$(BIN)/lint-imports --no-cache

bench: venv
	@mkdir -p bench/results
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The service: a system user, the package in its own venv, the unit and a default config.
install:
	id -u fsrouter >/dev/null 2>&1 || useradd --system --home-dir /var/lib/fsrouter --shell /usr/sbin/nologin fsrouter
	$(PYTHON) -m venv /opt/fsrouter
	/opt/fsrouter/bin/pip install -q '.[postgres]'
	ln -sf /opt/fsrouter/bin/fsrouter $(PREFIX)/bin/fsrouter
	install -d -m 0750 -o root -g fsrouter $(CONFIG_DIR)
	test -e $(CONFIG_DIR)/fsrouter.toml || install -m 0640 -o root -g fsrouter fsrouter/fsrouter.example.toml $(CONFIG_DIR)/fsrouter.toml
	install -m 0644 systemd/fsrouter.service $(SYSTEMD_DIR)/fsrouter.service
	-systemctl daemon-reload
	@echo "Now: edit $(CONFIG_DIR)/fsrouter.toml, then systemctl enable --now fsrouter"

uninstall:
	-systemctl disable --now fsrouter
	rm -f $(SYSTEMD_DIR)/fsrouter.service $(PREFIX)/bin/fsrouter
	rm -rf /opt/fsrouter

clean:
	rm -rf build dist *.egg-info .pytest_cache

# Fault-injection soak (docs/reliability.md): calls against a real `fsrouter run` while FreeSWITCH
# restarts, frames arrive malformed, the database stalls and fsrouter is SIGKILLed. Loopback only.
SOAK_SECONDS ?= 300
.PHONY: soak
soak: venv
	$(BIN)/python soak/run.py --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

# Coverage-guided fuzzing (fuzz/README.md): each target for FUZZ_SECONDS; crashes land in fuzz/crashes/.
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz: venv
	$(BIN)/pip install -q atheris
	@mkdir -p fuzz/crashes
	@set -e; for target in frames numbers csv config api; do \
	  echo "== fuzz $$target ($(FUZZ_SECONDS) s)"; \
	  mkdir -p /tmp/fsrouter-fuzz/$$target; \
	  $(BIN)/python fuzz/fuzz_$$target.py /tmp/fsrouter-fuzz/$$target fuzz/corpus/$$target \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=10 -artifact_prefix=fuzz/crashes/ \
	    -print_final_stats=1 2>&1 | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+== ERROR|=== Uncaught)|Error" || true; \
	  if ls fuzz/crashes/crash-* >/dev/null 2>&1; then echo "crash: see fuzz/crashes/"; exit 1; fi; \
	done
