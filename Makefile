# sitewatch developer commands. `make run` and `make test` are the two that
# matter; both start the local dev stack (Postgres + Tansu broker on
# loopback) first, installing what is missing.
SHELL := /bin/bash
CONFIG ?= config/sitewatch.example.toml
CARGO ?= cargo

.PHONY: all install-deps up down run test lint fmt clean-data

all: test

install-deps:
	scripts/install-deps

up: install-deps
	scripts/up

down:
	scripts/down

run: up
	$(CARGO) run --release -- migrate --config $(CONFIG)
	$(CARGO) run --release -- run --config $(CONFIG)

test: up
	source scripts/env.sh && $(CARGO) test --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-data: down
	rm -rf .data
