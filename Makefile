# streamlearn — the two commands a newcomer needs:
#   make demo    run the whole loop end to end on local defaults
#   make test    run the whole test suite (what CI runs)
# Both create what they need (.venv, jars) and reuse it on the next run.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.streamlearn-installed
JARS_STAMP := jvm/lib/.resolved

.PHONY: demo test venv jars lint stop clean help bench-tools

help:
	@echo "make demo    run the loop end to end (broker, training job, model store, prediction server)"
	@echo "make test    run the whole test suite"
	@echo "make stop    stop every service streamlearn started (broker, Flink cluster)"
	@echo "make lint    ruff"
	@echo "make bench-tools  the benchmarks' outside tools (wrk, kcat) from Debian's packages"

venv: $(VENV_STAMP)
$(VENV_STAMP): pyproject.toml setup.py $(wildcard streamlearn/serving/_native*.[ch]) $(wildcard streamlearn/learners/_kernel*.[ch])
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "streamlearn needs Python >= 3.11, found " + sys.version' 
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

jars: $(JARS_STAMP)
$(JARS_STAMP): jvm/pom.xml $(shell find jvm/src -name '*.java') | $(VENV_STAMP)
	@command -v mvn >/dev/null || { echo "Maven (mvn) is needed to fetch the Kafka and Flink jars"; exit 1; }
	@command -v javac >/dev/null || { echo "a JDK 17 (javac) is needed to run Kafka and Flink"; exit 1; }
	mvn --batch-mode --quiet -f jvm/pom.xml package
	rm -f jvm/lib/flink/streamlearn-flink.jar
	$(BIN)/python -m connectors.paths
	@touch $@

# types first (the [tool.mypy] settings in pyproject.toml): a type error fails the test command;
# then the JVM encoder's replay of the event contract's corpus (JUnit, by Surefire; offline:
# `jars` fetched what it needs), on every run, not only when the jars are rebuilt; then pytest,
# on two workers (pytest-xdist), each with its own broker: 10-12 min of wall time, about 17
# CPU-minutes counting the Flink clusters it starts (both cores busy most of the run), its
# JVMs compiling with C1 only (tests/conftest.py: they live for seconds)
test: venv jars
	$(BIN)/mypy
	mvn --batch-mode --quiet -o -f jvm/pom.xml test
	$(BIN)/python -m pytest -n 2

demo: venv jars
	$(BIN)/streamlearn demo

# The peers and load generators the benchmarks measure against that are not
# Python packages (vowpalwabbit is in the dev extras): Debian's packages.
bench-tools: venv
	@command -v wrk >/dev/null && command -v kcat >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "install wrk and kcat with your package manager"; exit 1; }; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk kcat; }

lint: venv
	$(BIN)/ruff check .

stop: venv
	-$(BIN)/streamlearn flink stop
	-$(BIN)/streamlearn kafka stop

clean: stop
	rm -rf .state .streamlearn jvm/lib reports
