# Everything a fresh machine needs is installed by these targets themselves
# (ocb, govulncheck, telemetrygen) with `go install` at pinned versions.
SHELL := /bin/bash
GO ?= go
BUILD_DIR := $(CURDIR)/_build
TOOLS_BIN := $(BUILD_DIR)/bin
# The collector release train. Every collector module in go.mod,
# builder-config.yaml and bench/go.mod is on it, and ocb is this release
# (TestReleaseTrain checks; contrib modules may be a patch release ahead).
COLLECTOR_RELEASE := v0.165.0
OCB_VERSION := $(COLLECTOR_RELEASE)
GOVULNCHECK_VERSION := v1.9.0
OCB := $(TOOLS_BIN)/builder
GOVULNCHECK := $(TOOLS_BIN)/govulncheck
COLLECTOR := $(BUILD_DIR)/otelcol-cloudzero/otelcol-cloudzero
TELEMETRYGEN_VERSION := v0.161.0
TELEMETRYGEN := $(TOOLS_BIN)/telemetrygen
USAGE_APP := $(TOOLS_BIN)/usage-app
DIRECT_APP := $(TOOLS_BIN)/direct-usage-app
CLOUDZERO_CLI := $(TOOLS_BIN)/cloudzero
# The scale-out recipe's first tier (deploy/loadbalancer) is on a train of its
# own: the contrib loadbalancing exporter is served here only at v0.161.0.
LB_RELEASE := v0.161.0
LB_OCB := $(TOOLS_BIN)/builder-$(LB_RELEASE)
LB_COLLECTOR := $(BUILD_DIR)/otelcol-cloudzero-lb/otelcol-cloudzero-lb
# What the collector compiles of this repository (so that editing tests,
# examples or tools does not rebuild it).
COMPONENT_SOURCES := $(filter-out %_test.go,$(wildcard *.go)) \
	$(shell find record translator exporter internal/metadata -name '*.go' -not -name '*_test.go') \
	go.mod go.sum builder-config.yaml

.PHONY: all build build-loadbalancer cloudzero test unit e2e bench-collector page-check lint generate demo clean

all: lint test

$(OCB):
	GOBIN=$(TOOLS_BIN) $(GO) install go.opentelemetry.io/collector/cmd/builder@$(OCB_VERSION)

# ocb installs as "builder": a second release goes to a directory of its own.
$(LB_OCB):
	GOBIN=$(BUILD_DIR)/ocb-$(LB_RELEASE) $(GO) install go.opentelemetry.io/collector/cmd/builder@$(LB_RELEASE)
	mkdir -p $(TOOLS_BIN)
	mv $(BUILD_DIR)/ocb-$(LB_RELEASE)/builder $(LB_OCB)

$(GOVULNCHECK):
	GOBIN=$(TOOLS_BIN) $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)

$(TELEMETRYGEN):
	GOBIN=$(TOOLS_BIN) $(GO) install github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@$(TELEMETRYGEN_VERSION)

$(USAGE_APP): $(wildcard examples/usage-app/*.go examples/internal/workload/*.go) go.mod go.sum
	$(GO) build -o $(USAGE_APP) ./examples/usage-app

# The same workload exported in-process (cloudzerometric): it compiles the exporter too.
$(DIRECT_APP): $(wildcard examples/direct-usage-app/*.go examples/internal/workload/*.go cloudzerometric/*.go) $(COMPONENT_SOURCES)
	$(GO) build -o $(DIRECT_APP) ./examples/direct-usage-app

# cloudzero: the command that fixes data in CloudZero (send, delete, replay, preview, validate).
cloudzero: $(CLOUDZERO_CLI)
$(CLOUDZERO_CLI): $(wildcard cmd/cloudzero/*.go internal/collectorconf/*.go) $(COMPONENT_SOURCES)
	$(GO) build -o $(CLOUDZERO_CLI) ./cmd/cloudzero

# build: the otelcol-cloudzero distribution, from builder-config.yaml.
build: $(COLLECTOR)
$(COLLECTOR): $(OCB) $(COMPONENT_SOURCES)
	mkdir -p $(BUILD_DIR)
	$(OCB) --config=builder-config.yaml
	@touch $(COLLECTOR)

# build-loadbalancer: the first tier of the scale-out recipe (deploy/loadbalancer).
build-loadbalancer: $(LB_COLLECTOR)
$(LB_COLLECTOR): $(LB_OCB) deploy/loadbalancer/builder-config.yaml
	cd deploy/loadbalancer && $(LB_OCB) --config=builder-config.yaml
	@touch $(LB_COLLECTOR)

# test: unit tests (race detector), the built collector end to end, and the
# emulator's page in headless Chromium (installed from Debian if missing).
test: unit e2e page-check

unit:
	$(GO) test -race -count=1 ./...
	cd bench && $(GO) test -count=1 ./...
	cd deploy && $(GO) test -count=1 ./...

e2e: $(COLLECTOR) $(LB_COLLECTOR) $(TELEMETRYGEN) $(USAGE_APP) $(DIRECT_APP) $(CLOUDZERO_CLI)
	COLLECTOR_BIN=$(COLLECTOR) LB_COLLECTOR_BIN=$(LB_COLLECTOR) TELEMETRYGEN_BIN=$(TELEMETRYGEN) USAGE_APP_BIN=$(USAGE_APP) DIRECT_APP_BIN=$(DIRECT_APP) CLOUDZERO_BIN=$(CLOUDZERO_CLI) \
	  $(GO) test -race -count=1 -timeout 20m -tags e2e -v ./e2e/...

# bench-collector: collector CPU per million points, cloudzero vs debug
# exporter, same input, same run (e2e/bench_test.go). Not part of `make test`.
bench-collector: $(COLLECTOR)
	COLLECTOR_BIN=$(COLLECTOR) $(GO) test -tags e2e -run '^$$' -bench BenchmarkCollectorCPU -benchtime 1x -count 5 ./e2e/...

page-check:
	bash scripts/emulator-screenshot.sh

lint: $(GOVULNCHECK)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@# govulncheck needs vuln.go.dev; say so instead of failing where it is unreachable.
	@if curl -fsS -m 10 -o /dev/null https://vuln.go.dev/index/db.json; then $(GOVULNCHECK) ./...; \
	  else echo "govulncheck: vuln.go.dev unreachable from this machine, skipped"; fi

generate:
	$(GO) generate ./...

demo: $(COLLECTOR)
	bash scripts/demo.sh

clean:
	rm -rf $(BUILD_DIR)
