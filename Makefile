# tortie: a userspace vRouter for Kubernetes pod networking.
#   make lab       build, install what the lab needs, bring up a 3-node VXLAN lab, show it working, tear it down
#   make k8s-demo  build, bring up a 3-node Kubernetes cluster running tortie as a DaemonSet, show a
#                  Service reached by name from a pod; the cluster is left up
#   make test      install what the tests need and run them all (needs root for the netns tests)

GO      ?= go
BIN     := bin
LAB     ?= tl
K8S_LAB ?= k8s
# Debian packages the lab and the tests use: namespaces and links (iproute2),
# ping, TCP transfers (iperf3), an independent decoder (tshark), offload
# settings on veths (ethtool), natOutgoing (nftables), kube-proxy's iptables mode (iptables), a real etcd cluster
# for the member-loss test (etcd-server), the benchmark's packet generator
# (trafgen, from netsniff-ng) and latency meter (sockperf), a container
# runtime for pods made by containerd through tortie-cni (containerd, runc,
# and containernetworking-plugins for the loopback plugin the CRI calls).
# cnitool comes from the Go module proxy, installed by the tests themselves.
PKGS    := iproute2 iputils-ping iperf3 tshark ethtool procps nftables iptables etcd-server netsniff-ng sockperf bird2 frr containerd runc containernetworking-plugins
TOOLS   := ip ping iperf3 tshark ethtool sysctl nft iptables iptables-legacy etcd trafgen sockperf bird birdc vtysh containerd ctr runc /usr/lib/cni/loopback

.PHONY: all build deps lab k8s-demo test test-prereqs unit integration bench fuzz vet lint fmt-check clean lab-down k8s-bins k8s-bin-dir coredns-bin coredns-bin-path

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Installs missing tools with apt-get (as root); does nothing when all are present.
deps:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing packages for:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root to install:$(PKGS)"; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PKGS) >/dev/null; \
	fi

lab: deps build
	@$(BIN)/tortie-lab down --name $(LAB) >/dev/null 2>&1 || true
	@set -e; trap '$(BIN)/tortie-lab down --name $(LAB)' EXIT; \
	echo "== tortie-lab up: 3 nodes, 2 pods each, VXLAN"; \
	$(BIN)/tortie-lab up --name $(LAB) --nodes 3 --pods 2 --mode vxlan; \
	echo; echo "== tortiectl on n1"; \
	$(BIN)/tortiectl --socket /run/tortie-lab/$(LAB)/n1.sock status; echo; \
	$(BIN)/tortiectl --socket /run/tortie-lab/$(LAB)/n1.sock routes; echo; \
	$(BIN)/tortiectl --socket /run/tortie-lab/$(LAB)/n1.sock ipam; echo; \
	echo "== tortie-lab check: every pod to every pod, nodes to pods and back"; \
	$(BIN)/tortie-lab check --name $(LAB); echo; \
	echo "== iperf3, pod n1p1 -> pod n2p1 across nodes, and back (TCP under cubic, as the benchmarks)"; \
	$(BIN)/tortie-lab iperf --name $(LAB) -t 3 --congestion cubic n1p1 n2p1; \
	$(BIN)/tortie-lab iperf --name $(LAB) -t 3 --congestion cubic -R n1p1 n2p1; echo; \
	$(BIN)/tortiectl --socket /run/tortie-lab/$(LAB)/n1.sock counters; echo; \
	echo "== tortie-lab down"

lab-down:
	$(BIN)/tortie-lab down --name $(LAB)

# A Kubernetes cluster on tortie: three nodes on two subnets (VXLAN across
# them, routes over BGP), each with a containerd, a kubelet and kube-proxy,
# tortie deployed from deploy/ as a DaemonSet, CoreDNS; then echo pods
# behind a Service, reached by name from a pod. The cluster is left up
# (make lab-down LAB=$(K8S_LAB) removes it).
k8s-demo: deps build k8s-bins coredns-bin
	@$(BIN)/tortie-lab down --name $(K8S_LAB) >/dev/null 2>&1 || true
	@set -e; \
	$(BIN)/tortie-lab up --k8s --name $(K8S_LAB) --nodes 3 --mode vxlan-crosssubnet --bgp \
		--k8s-bin-dir $(K8S_BIN_DIR) --coredns $(COREDNS_BIN); echo; \
	$(BIN)/tortie-lab k8s-demo --name $(K8S_LAB); echo; \
	echo "The cluster is still up: $(BIN)/tortie-lab kubectl --name $(K8S_LAB) -- get pods -A"; \
	echo "Remove it with: $(BIN)/tortie-lab down --name $(K8S_LAB)   (or make lab-down LAB=$(K8S_LAB))"

# Kubernetes' own binaries for tests under a real cluster, built from the Go
# module proxy in the separate module k8s/tools (never linked into tortie),
# into a cache outside the tree, each only when missing (about 20 minutes on 2
# cores the first time). As Kubernetes' own release build: -trimpath, its build
# tags, version variables set, symbols stripped; static (CGO_ENABLED=0).
#   make k8s-bins                 build what is missing
#   make -s k8s-bin-dir           print where they are
K8S_VERSION := $(shell awk '!/^[[:space:]]*\/\// { for (i = 1; i < NF; i++) \
	if ($$i == "k8s.io/kubernetes" && $$(i+1) ~ /^v/) print $$(i+1) }' k8s/tools/go.mod)
K8S_BIN_DIR ?= $(HOME)/.cache/tortie/k8s/$(K8S_VERSION)
K8S_CMDS    := kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
K8S_BINS    := $(addprefix $(K8S_BIN_DIR)/,$(K8S_CMDS))
K8S_MAJOR   := $(patsubst v%,%,$(word 1,$(subst ., ,$(K8S_VERSION))))
K8S_MINOR   := $(word 2,$(subst ., ,$(K8S_VERSION)))
# The module proxy does not say which commit a version is: gitCommit is left empty.
K8S_VERSION_X = $(foreach p,k8s.io/client-go/pkg/version k8s.io/component-base/version,\
	-X $(p).gitVersion=$(K8S_VERSION) -X $(p).gitMajor=$(K8S_MAJOR) -X $(p).gitMinor=$(K8S_MINOR) \
	-X $(p).gitCommit= -X $(p).buildDate=$$(date -u +%Y-%m-%dT%H:%M:%SZ))

k8s-bins: $(K8S_BINS)
	@ls -l $(K8S_BINS)

k8s-bin-dir:
	@echo $(K8S_BIN_DIR)

$(K8S_BINS): $(K8S_BIN_DIR)/%:
	$(if $(K8S_VERSION),,$(error no k8s.io/kubernetes version in k8s/tools/go.mod))
	@mkdir -p $(@D)
	@echo "building $* $(K8S_VERSION) into $(@D)"
	@start=$$(date +%s); \
	cd k8s/tools && GOWORK=off CGO_ENABLED=0 $(GO) build -trimpath -tags selinux,notest,grpcnotrace \
		-ldflags "-s -w $(K8S_VERSION_X)" -o $(abspath $@).tmp k8s.io/kubernetes/cmd/$* && \
	mv $@.tmp $@ && \
	echo "built $* in $$(( $$(date +%s) - start ))s"

# CoreDNS for cluster DNS under a real cluster, built the same way from the
# separate module k8s/coredns (its main package is the module root) into a
# cache outside the tree, only when missing; static, -trimpath, no symbols.
# Its version string is a constant of its source (coredns -version).
#   make coredns-bin              build it if missing
#   make -s coredns-bin-path      print where it is
COREDNS_VERSION := $(shell awk '!/^[[:space:]]*\/\// { for (i = 1; i < NF; i++) \
	if ($$i == "github.com/coredns/coredns" && $$(i+1) ~ /^v/) print $$(i+1) }' k8s/coredns/go.mod)
COREDNS_BIN ?= $(HOME)/.cache/tortie/coredns/$(COREDNS_VERSION)/coredns

coredns-bin: $(COREDNS_BIN)
	@ls -l $(COREDNS_BIN)

coredns-bin-path:
	@echo $(COREDNS_BIN)

$(COREDNS_BIN):
	$(if $(COREDNS_VERSION),,$(error no github.com/coredns/coredns version in k8s/coredns/go.mod))
	@mkdir -p $(@D)
	@echo "building coredns $(COREDNS_VERSION) into $(@D)"
	@start=$$(date +%s); \
	cd k8s/coredns && GOWORK=off CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" \
		-o $(abspath $@).tmp github.com/coredns/coredns && \
	mv $@.tmp $@ && \
	echo "built coredns in $$(( $$(date +%s) - start ))s"

# policy/oracle is a module of its own (it checks package policy against
# cyclonus, whose client-go must not reach tortie's go.mod): vet, lint and
# test it from its directory too.
ORACLE := policy/oracle

vet:
	$(GO) vet ./...
	cd $(ORACLE) && $(GO) vet ./...

# golangci-lint (staticcheck, revive, import grouping; see .golangci.yml),
# built once from the Go module proxy into a cache outside the tree.
LINT_VERSION := v2.15.0
TOOLS_DIR    ?= $(HOME)/.cache/tortie/tools
GOLANGCI     := $(TOOLS_DIR)/golangci-lint-$(LINT_VERSION)/golangci-lint
$(GOLANGCI):
	GOBIN=$(dir $@) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(LINT_VERSION)

lint: $(GOLANGCI)
	$(GOLANGCI) run --allow-parallel-runners ./...
	cd $(ORACLE) && $(GOLANGCI) run --allow-parallel-runners ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Everything: unit tests with the race detector, fuzz corpora as regression
# tests, and the root integration tests in real namespaces.
# TORTIE_K8S_BIN tells the tests that run a kube-apiserver (package
# datastore/kubetest) where Kubernetes' binaries are: with it set they fail
# rather than skip when kube-apiserver is missing. make unit, which does not
# build them, sets it only when they are there.
# GoBGP itself has a known data race between its event watcher and a peer
# going down (upstream issue osrg/gobgp#2705), which the bgp tests of prefix
# limits, TTL security and malformed messages provoke: they skip themselves
# under -race (bgp/race_test.go), and the bgp package runs once more without it.
# What the tests need is made two steps at a time (output kept per step):
# on a fresh machine, installing packages and fetching modules wait on the
# network and the disk while a build uses the CPUs.
test:
	$(MAKE) -j2 --output-sync=target test-prereqs
	TORTIE_K8S_BIN=$(K8S_BIN_DIR) $(GO) test -race -count=1 -timeout 30m ./...
	cd $(ORACLE) && $(GO) test -race -count=1 ./...
	$(GO) test -count=1 ./bgp/

test-prereqs: deps fmt-check vet lint k8s-bins coredns-bin

unit:
	$(if $(wildcard $(K8S_BIN_DIR)/kube-apiserver),TORTIE_K8S_BIN=$(K8S_BIN_DIR) )$(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/test$$')
	cd $(ORACLE) && $(GO) test -race -count=1 ./...
	$(GO) test -count=1 ./bgp/

integration: deps
	$(GO) test -count=1 -v -timeout 15m ./test/

# Figures only; never gates CI. Micro-benchmarks of the per-packet path and
# of policy, then tortie against the kernel, and tortie with 100 policies in
# force against none, in one run (BENCH_FLAGS to change it, e.g.
# BENCH_FLAGS="--duration 10s --reps 5 --setups kernel-vxlan,tortie-vxlan",
# "--policies 1000 --setups tortie-vxlan-no-policy,tortie-vxlan-policy", or
# "--tests pps,tcp,latency" to leave out the zero-loss searches, which
# nearly double the run).
BENCH_FLAGS ?= --duration 5s --reps 3
bench: deps build
	$(GO) test -run '^$$' -bench . -benchmem ./router/... ./fib/ ./encap/ ./policy/
	$(BIN)/tortie-bench $(BENCH_FLAGS) --out bench/out

# A run of FUZZTIME for every fuzz target found in the code. A new input is
# minimized for at most FUZZMINTIME: with Go's default of 60s, the targets
# that find new coverage often spent their time minimizing, not fuzzing
# (FuzzFromPodOffload: 7,000 executions in 10s with 2s, 117,000 with 100x).
FUZZTIME    ?= 20s
FUZZMINTIME ?= 100x
fuzz:
	@targets=$$(grep -r --include='*_test.go' --exclude-dir=.git -o '^func Fuzz[A-Za-z0-9_]*' . | \
		sed 's|/[^/]*:func |:|' | sort); \
	[ -n "$$targets" ] || { echo "no fuzz targets found"; exit 1; }; \
	for t in $$targets; do \
		dir=$${t%%:*}; fn=$${t##*:}; \
		echo "== $$dir $$fn ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) $$dir/ || exit 1; \
	done

clean:
	rm -rf $(BIN)
