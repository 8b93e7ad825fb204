# Glitr — build, run and test. `make help` lists the targets.

SHELL    := bash
GO       ?= go
BIN      ?= bin/glitr
DATA     ?= $(or $(GLITR_DATA),$(CURDIR)/.glitr)
PKGS     := ./...
# Fuzz smoke runs a fixed number of executions per target: a time budget
# as short as a few seconds can expire before a loaded machine finishes the
# baseline coverage pass, which go test reports as a failure.
FUZZTIME ?= 10000x
FUZZCAMPAIGN ?= 2m
# The soak (cmd/node TestSoak): make soak runs it for SOAK with SOAK_NODES
# nodes; make test runs it for SOAK_CI alongside the other packages.
SOAK       ?= 10m
SOAK_NODES ?= 3
SOAK_CI    ?= 1m
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)

.PHONY: help build run relay test test-go test-mailbox-group test-ui ui ui-check fuzz fuzz-smoke bench bench-smoke soak lint fmt clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/glitr
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/node

run: build ## initialize a data directory if needed (./.glitr or $GLITR_DATA) and run a personal node
	$(BIN) --data $(DATA) init --if-missing
	$(BIN) --data $(DATA) run

relay: build ## initialize (if needed) and run a relay node in ./.glitr-relay
	$(BIN) --data $(CURDIR)/.glitr-relay init --profile relay --if-missing
	$(BIN) --data $(CURDIR)/.glitr-relay relay

test: lint test-go test-ui fuzz-smoke bench-smoke ## the whole suite: lint, race tests, browser tests, every fuzz target briefly, every benchmark once

# A skipped NAT lab test (not root, no nftables) is named at the end of
# the run: go test would show its message only with -v.
test-go: ## go test -race over every package
	@skip=$$(mktemp); GLITR_NATLAB_SKIPFILE=$$skip GLITR_SOAK=$(SOAK_CI) $(GO) test -race -count=1 -timeout 20m $(PKGS); st=$$?; \
	  if [ -s $$skip ]; then echo; echo "*** $$(cat $$skip) ***"; echo; fi; rm -f $$skip; exit $$st

# The browser UI: webui/dist is committed (go build needs no Node); `make ui`
# rebuilds it from the lockfile, byte for byte.
ui: ## rebuild the browser UI bundle (webui/dist) with npm ci + vite
	cd webui && npm ci --no-audit --no-fund && npm run build

ui-check: ui ## rebuild the UI and fail if the committed webui/dist differs
	git diff --exit-code --stat -- webui/dist
	@test -z "$$(git status --porcelain -- webui/dist)" || { echo "webui/dist has files the build does not make (or lacks some)"; git status --short -- webui/dist; exit 1; }

test-ui: ## browser end-to-end tests: two real nodes, headless Chromium (needs /usr/bin/chromium)
	cd webui && npm ci --no-audit --no-fund && node e2e/run.mjs

# Every Fuzz* function of every package, each for FUZZTIME.
fuzz-smoke: ## run every fuzz target for FUZZTIME (default 20000 executions)
	@set -eo pipefail; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg | grep -v '^fuzz: elapsed' ; \
	  done; \
	done

fuzz: ## a longer fuzzing campaign per target: make fuzz FUZZCAMPAIGN=10m
	$(MAKE) fuzz-smoke FUZZTIME=$(FUZZCAMPAIGN)

test-mailbox-group: ## the five-member mailbox test, not yet reliable (a known gap, issue 13)
	GLITR_MAILBOX_GROUP=1 $(GO) test -count=1 -run '^TestMailboxGroupNeverOnlineTogether$$' ./node

soak: ## nodes exchanging messages with restarts and kills for SOAK (default 10m), then no loss, no duplicate, equal replicas, no RSS growth
	GLITR_SOAK=$(SOAK) GLITR_SOAK_NODES=$(SOAK_NODES) $(GO) test -run '^TestSoak$$' -count=1 -v -timeout 2h ./cmd/node

bench-smoke: ## every benchmark once at a small size, so none can rot
	$(GO) test -short -run '^$$' -bench . -benchtime 1x $(PKGS)

bench: ## the benchmarks at full size (figures go to docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchmem -count 1 -timeout 60m $(PKGS)

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

fmt: ## gofmt -w
	gofmt -w $$(git ls-files '*.go')

clean: ## remove build outputs (not data directories)
	rm -rf bin
