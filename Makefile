# tidegate build, test and demo targets. Run as root for the integration
# tests (network namespaces, XDP); `make test` installs what it needs.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := bin/tidegate

# Debian packages the tests need: iproute2 and ethtool for network
# namespaces, clang-19, llvm-19, libbpf-dev (bpf_helpers.h) and
# linux-libc-dev (UAPI headers) to check the committed BPF objects,
# redis-server for the shared rate-limit tests, curl for the demo check,
# chromium for the status page tests, haproxy for the PROXY protocol
# interop tests.
APT_PACKAGES := iproute2 ethtool clang-19 llvm-19 libbpf-dev linux-libc-dev redis-server curl chromium haproxy

.PHONY: all build test unit integration deps lint generate generate-check demo bench compose-up compose-down clean

all: build

# build also makes the demo certificate generator that
# deploy/Dockerfile.prebuilt copies next to the binary.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/tidegate
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/tidegate-democert ./deploy/democert

# deps installs the Debian packages the full test run needs, when missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root to install$$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# test is the full run: unit tests with the race detector, fuzz seeds,
# benchmarks once each, the committed BPF objects checked against their
# sources, and the integration suite (root; network namespaces and XDP).
test: deps lint unit generate-check integration

unit:
	$(GO) test -race -count=1 ./...
	$(GO) test -run '^$$' -bench . -benchtime 1x -count=1 ./...

integration:
	@if [ "$$(id -u)" != 0 ]; then echo "make integration: needs root (network namespaces, XDP)" >&2; exit 1; fi
	$(GO) test -tags integration -count=1 -timeout 40m ./integration/... ./l4/xdp/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...

# generate rebuilds the BPF objects with clang-19 through bpf2go.
generate:
	$(GO) generate ./l4/xdp/...

# generate-check fails when the committed BPF output differs from what the
# sources produce.
generate-check:
	@if [ -d l4/xdp ] && grep -rq 'go:generate' l4/xdp; then \
		$(MAKE) --no-print-directory generate && \
		git diff --exit-code --stat -- l4/xdp bpf || { echo "committed BPF output is stale: run make generate and commit" >&2; exit 1; }; \
	fi

demo: build
	./$(BIN) demo

bench: build
	bash bench/run.sh $(SCENARIO)

# OBSERVE=1 also starts the services of the compose profile "metrics":
# Prometheus, and Grafana with the dashboard from deploy/grafana.
compose-up:
	docker compose -f deploy/docker-compose.yml $(if $(filter 1 yes true,$(OBSERVE)),--profile metrics) up --build -d

compose-down:
	docker compose -f deploy/docker-compose.yml --profile metrics down

clean:
	rm -rf bin
