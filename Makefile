# streamer: every target installs what it needs (virtualenv, Python packages, Kafka jars,
# Debian packages), so `make demo` and `make test` work on a fresh machine.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_FILE ?= examples/uci-news-sample.tsv
DEMO_OUT ?= out/demo
KAFKA_DIR ?= .cache/kafka/dev
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
PYTEST_ARGS ?=
BURST_SECONDS ?= 60

.PHONY: help venv system-deps kafka-jars deploy-tools setup test test-unit demo demo-batch demo-stream demo-serve \
        kafka-up kafka-down bench lint lint-imports settings-table clean reliability-burst

help:
	@echo "make demo        batch report + streaming replay on the bundled sample (Milvus Lite, bundled model, local Kafka)"
	@echo "make test        every test: unit and integration against real Kafka, Milvus (Lite and server) and the model"
	@echo "make test-unit   the fast pure-core tests only"
	@echo "make bench       benchmarks (see docs/benchmarks.md)"
	@echo "make reliability-burst  a full minute at 10x the usual rate (docs/reliability.md; BURST_SECONDS=60)"
	@echo "make kafka-up    start a local Kafka broker (KRaft, 127.0.0.1); make kafka-down stops it"

# Debian packages the project needs beyond the base image: venv/ensurepip for the virtualenv (Debian's
# python3 leaves them out), Java and Maven for the Kafka broker, iproute2/util-linux for the Milvus
# server's private network namespace, openssl for the TLS test's certificates, Chromium and its
# WebDriver for the live page's browser test (tests/integration/test_browser.py).
system-deps:
	@missing=""; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v java >/dev/null || missing="$$missing default-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v unshare >/dev/null || missing="$$missing util-linux"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml | system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

kafka-jars: system-deps
	$(PYTHON) tools/kafka/broker.py fetch

deploy-tools:
	@if [ -x tools/install-deploy-tools.sh ]; then tools/install-deploy-tools.sh; fi

setup: venv kafka-jars deploy-tools

test: setup lint-imports
	$(PY) -m pytest -q --durations=25 $(PYTEST_ARGS)  # the slowest tests, to keep the suite under its 25 min

# The layers of streamer/ (docs/design.md): contracts in pyproject.toml [tool.importlinter].
lint-imports: venv
	$(VENV)/bin/lint-imports

test-unit: venv
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

demo: demo-batch demo-stream demo-serve

demo-batch: venv
	@echo "== batch: streamer cluster $(DEMO_FILE)"
	$(VENV)/bin/streamer cluster $(DEMO_FILE) --out $(DEMO_OUT) --uri .streamer/demo.db --set service.log_format=console --set service.log_level=WARNING
	@echo "open $(DEMO_OUT)/plot.html in a browser for the UMAP map"

demo-stream: venv kafka-jars
	$(PY) tools/demo_stream.py --file $(DEMO_FILE) --out $(DEMO_OUT)

# Serves the streaming replay's saved events (out/demo/events) at the printed URL until Ctrl-C.
demo-serve: venv
	@echo "== serve: the live page on the demo data (Ctrl-C stops it)"
	$(VENV)/bin/streamer serve --from $(DEMO_OUT) --set service.log_format=console --set service.log_level=WARNING

kafka-up: kafka-jars
	$(PYTHON) tools/kafka/broker.py up --dir $(KAFKA_DIR)

kafka-down:
	$(PYTHON) tools/kafka/broker.py down --dir $(KAFKA_DIR)

bench: setup
	$(PY) bench/run_all.py

# The burst fault test with a full minute at 10x the usual rate (`make test` runs it for 6 s); takes minutes.
reliability-burst: venv kafka-jars
	STREAMER_BURST_SECONDS=$(BURST_SECONDS) $(PY) -m pytest tests/integration/test_faults.py -k burst -s $(PYTEST_ARGS)

settings-table: venv
	$(VENV)/bin/streamer settings --markdown

clean:
	rm -rf out .streamer .pytest_cache .hypothesis
