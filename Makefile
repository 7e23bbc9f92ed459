# sitewatch developer commands. `make run` and `make test` are the two that
# matter; both start the local dev stack (Postgres + Apache Kafka on
# loopback) first, installing what is missing.
SHELL := /bin/bash
CONFIG ?= config/sitewatch.example.toml
CARGO ?= cargo

.PHONY: all install-deps up down run smoke test lint fmt clean-data install uninstall bench bench-probe soak faults bench-status model model-alerts

all: test

install-deps:
	scripts/install-deps

up: install-deps
	scripts/up

down:
	scripts/down

run: up
	source scripts/env.sh && export_dev_endpoints && \
		$(CARGO) run --release -- migrate --config $(CONFIG) && \
		exec $(CARGO) run --release -- run --config $(CONFIG)

# CI's check of `make run`: a row for a local site, then a clean stop.
smoke: up
	scripts/smoke-run

test: up
	scripts/test-db-clean
	source scripts/env.sh && $(CARGO) test --all-targets

# Faults and hostile input, full form (RELIABILITY.md); `make test` runs
# the short form.
faults: up
	scripts/faults

# The scheduler's model test, long form: 20,000 random histories of
# reloads, crashes, restarts, skewed clocks, hand-overs and outages
# (RELIABILITY.md); `make test` runs 32. No stack needed.
MODEL_CASES ?= 20000
model:
	SITEWATCH_MODEL_CASES=$(MODEL_CASES) $(CARGO) test --lib scheduler::tests::model -- --nocapture

# The alert pairing's model test, long form: random histories of results,
# maintenance windows, route changes and evaluator restarts driving the
# real evaluator against the real Postgres (`make test` runs 24; 300 take
# about 10 minutes).
ALERT_MODEL_CASES ?= 300
model-alerts: up
	source scripts/env.sh && SITEWATCH_MODEL_CASES=$(ALERT_MODEL_CASES) $(CARGO) test --test it pairing -- --nocapture

# Benchmarks (BENCHMARKS.md): figures are printed, never asserted.
bench-probe:
	bench/probe.sh

bench: up
	bench/pipeline.sh

# The status page at 1,000 listed sites: render time and what readers wait.
bench-status: up
	bench/status_page.sh

# The write path over an hour: SITES, INTERVAL, MINUTES (default 1500, 1s, 60).
soak: up
	bench/soak.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Installs the release binary, the systemd unit and a config to start from
# (an existing /etc/sitewatch/sitewatch.toml is kept). Run as root.
PREFIX ?= /usr/local
DESTDIR ?=
install:
	$(CARGO) build --release --locked
	install -D -m 0755 target/release/sitewatch $(DESTDIR)$(PREFIX)/bin/sitewatch
	install -D -m 0644 deploy/sitewatch.service $(DESTDIR)/etc/systemd/system/sitewatch.service
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/sitewatch/README.md
	install -d -m 0755 $(DESTDIR)/etc/sitewatch
	[ -e $(DESTDIR)/etc/sitewatch/sitewatch.toml ] || \
		install -m 0644 config/sitewatch.example.toml $(DESTDIR)/etc/sitewatch/sitewatch.toml
	@echo "now: systemctl daemon-reload && systemctl enable --now sitewatch"

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/sitewatch $(DESTDIR)/etc/systemd/system/sitewatch.service
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/sitewatch

clean-data: down
	rm -rf .data
