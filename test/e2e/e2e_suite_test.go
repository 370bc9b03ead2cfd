// Package e2e plays the seed's story end to end on the local control plane: a chat
// client asks a question through the gateway, Claude (a deterministic fake, or the real
// API) calls a tool on an MCP server in the cluster, the MCP server fails, selfheal
// heals it while the call is held, and the answer arrives. Every protocol is real:
// HTTP, SSE, MCP (official Go SDK), the Anthropic Go SDK, the Kubernetes API; the
// manager is the binary `make build` produces, running as its ServiceAccount with the
// RBAC from config/rbac. kwok plays the kubelet.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/selfheal-dev/selfheal/internal/controlplane"
	"github.com/selfheal-dev/selfheal/internal/demo/stack"
)

var env *stack.Stack

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "selfheal e2e")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	root, err := controlplane.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	bin := filepath.Join(root, "bin", "manager")
	if _, err := os.Stat(bin); err != nil || os.Getenv("E2E_REBUILD") != "" {
		// `make test` builds it first; a bare `go test` builds it here, the same way.
		By("building the manager binary (make build)")
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/manager")
		cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
	}
	env, err = stack.Start(ctx, stack.Options{Progress: GinkgoWriter, ManagerBinary: bin, CallTimeout: 2 * time.Second})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() {
			fmt.Fprintf(GinkgoWriter, "manager log:\n%s\n", env.ManagerLog())
		}
		env.Stop()
	})
}, NodeTimeout(15*time.Minute))

// recovered prints a scenario's time to recover, from the failure to the answer.
func recovered(name string, d time.Duration) {
	line := fmt.Sprintf("time to recover [%s]: %s", name, d.Round(time.Millisecond))
	AddReportEntry("time to recover", line)
	fmt.Fprintln(os.Stderr, line)
}
