# selfheal — heals the in-cluster services an AI chat backend depends on.
#
#   make demo    the story on a local control plane (builds what it needs)
#   make test    every test, with the race detector, on a real local control plane

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

IMG ?= ghcr.io/selfheal-dev/selfheal:dev
GOLANGCI_LINT_VERSION ?= v2.15.0
KUSTOMIZE_VERSION ?= v5.8.1
LOCALBIN ?= $(shell pwd)/bin
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
CONTROLLER_GEN := go tool controller-gen
KUBECTL ?= kubectl
# Test packages get this long; the e2e suite and the control plane's first build need it.
TEST_TIMEOUT ?= 30m

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: ## Generate the CRDs and one ClusterRole per identity (each rule commented with its markers' "// rbac:" reasons).
	$(CONTROLLER_GEN) crd:allowDangerousTypes=false paths="./api/..." output:crd:artifacts:config=config/crd/bases
	$(call rbac-role,selfheal-controller,controller,./internal/controller ./internal/diagnostics)
	$(call rbac-role,selfheal-remediation,remediation,./internal/remediation)
	$(call rbac-role,selfheal-gateway,gateway,./cmd/manager)

# rbac-role generates ClusterRole $(1) into config/rbac/$(2)/role.yaml from the markers
# of the packages $(3), and writes each rule's reasons above it.
define rbac-role
	$(CONTROLLER_GEN) rbac:roleName=$(1) paths="$(subst $(space),;,$(3))" output:rbac:artifacts:config=config/rbac/$(2)
	go run ./hack/rbaccomments -root $(subst $(space),$(comma),$(3)) -role config/rbac/$(2)/role.yaml
endef
space := $(subst ,, )
comma := ,

.PHONY: generate
generate: ## Generate the deepcopy code of the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## go fmt.
	go fmt ./...

.PHONY: vet
vet: ## go vet.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## golangci-lint (pinned).
	$(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: ## Regenerate everything and fail if anything differs from what is committed.
	$(MAKE) manifests generate
	@if [ -n "$$(git status --porcelain -- api config)" ]; then \
		echo "Generated files are out of date; run 'make manifests generate' and commit:"; \
		git status --porcelain -- api config; git --no-pager diff --stat -- api config; exit 1; \
	fi
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	@go mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
	go vet ./...

.PHONY: check-rules
check-rules: ## promtool check rules on config/prometheus (installs Debian's prometheus package, which ships promtool, when missing).
	@command -v promtool >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends prometheus; }
	@mkdir -p $(LOCALBIN)
	@# promtool reads a plain rule file: the PrometheusRule's spec, unindented.
	sed '1,/^spec:$$/d; s/^  //' config/prometheus/prometheusrule.yaml > $(LOCALBIN)/selfheal-rules.yaml
	promtool check rules $(LOCALBIN)/selfheal-rules.yaml

.PHONY: chromium
chromium: ## Install Debian's chromium when missing: the e2e suite drives the gateway's /ui page with it (and fails without it).
	@command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium; }

.PHONY: controlplane
controlplane: ## Build (or reuse) the local control plane binaries; prints their directory.
	@hack/controlplane.sh

.PHONY: test
test: build chromium ## Run every test (unit, envtest, e2e, the /ui page in Chromium) with the race detector on the local control plane.
	KUBEBUILDER_ASSETS="$$(hack/controlplane.sh)" go test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

.PHONY: test-e2e
test-e2e: build chromium ## Run the e2e suite alone.
	KUBEBUILDER_ASSETS="$$(hack/controlplane.sh)" go test -race -count=1 -timeout $(TEST_TIMEOUT) ./test/e2e/... -v -ginkgo.v

.PHONY: bench
bench: ## Run the benchmarks; each prints its figures (the README lists the latest).
	KUBEBUILDER_ASSETS="$$(hack/controlplane.sh)" go test -run '^$$' -bench . -benchtime 1x -timeout $(TEST_TIMEOUT) \
		./internal/controller/
	go test -run '^$$' -bench BenchmarkAddedLatency -benchtime 5000x ./internal/gateway/
	go test -run '^$$' -bench 'BenchmarkIdleSSESubscribers|BenchmarkMCPSessionsAcrossReplicas' -benchtime 1x ./internal/gateway/
	go test -run '^$$' -bench . -benchtime 2s ./internal/diagnostics/ ./internal/remediation/

##@ Build

.PHONY: build
build: ## Build the manager binary into bin/.
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/manager ./cmd/manager

.PHONY: run
run: ## Run the manager against the current kubeconfig.
	go run ./cmd/manager $(ARGS)

.PHONY: demo
demo: build ## The story on a local control plane; DEMO_ONCE=1 plays it once and exits.
	go build -o $(LOCALBIN)/demo ./hack/demo
	$(LOCALBIN)/demo

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine).
	docker build -t $(IMG) .

##@ Deployment

.PHONY: install
install: ## Install the CRDs into the cluster of the current kubeconfig.
	$(KUBECTL) apply --server-side -f config/crd/bases

.PHONY: uninstall
uninstall: ## Remove the CRDs (and with them every HealingRequest and HealingPolicy).
	$(KUBECTL) delete --ignore-not-found -f config/crd/bases

.PHONY: deploy
deploy: $(KUSTOMIZE) ## Deploy config/default (CRDs, RBAC, admission policy, both Deployments) with image IMG to the current kubeconfig.
	$(KUSTOMIZE) build config/default | sed 's|image: ghcr.io/selfheal-dev/selfheal:dev|image: $(IMG)|' | \
		$(KUBECTL) apply --server-side --field-manager=selfheal-install -f -

.PHONY: undeploy
undeploy: $(KUSTOMIZE) ## Remove what deploy created.
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found -f -

##@ Tools

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

$(GOLANGCI_LINT): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(LOCALBIN)/golangci-lint $@

$(KUSTOMIZE): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	mv $(LOCALBIN)/kustomize $@
