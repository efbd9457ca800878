# The single source of truth for building, running, testing and measuring verdict.
CARGO ?= cargo
LISTEN ?= 127.0.0.1:8443
METRICS_LISTEN ?= 127.0.0.1:9090

.PHONY: build run test test-rust test-policies lint fmt bench certs clean

build:
	$(CARGO) build --release --locked

# Dev certificates for 127.0.0.1 / localhost, created once.
certs: certs/tls.crt
certs/tls.crt:
	$(CARGO) run --release --locked -- certs --out certs --dns localhost --ip 127.0.0.1

# The webhook on https://$(LISTEN) with the shipped policies/.
run: certs
	$(CARGO) run --release --locked -- serve --listen $(LISTEN) --metrics-listen $(METRICS_LISTEN) \
		--tls-cert certs/tls.crt --tls-key certs/tls.key --policies policies

test: test-rust test-policies

test-rust:
	$(CARGO) test --locked --all-targets

test-policies:
	$(CARGO) run --locked --quiet -- test policies

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Criterion micro-benchmarks, then the load benchmark against the release server with a
# no-op baseline (target/bench/results.json, results.md, latency.png).
bench:
	$(CARGO) build --release --locked
	$(CARGO) bench --locked --bench review
	$(CARGO) bench --locked --bench load

clean:
	$(CARGO) clean
