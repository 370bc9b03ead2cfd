package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The production binary must not link the test control plane (envtest, kwok
// harness): a scheme or helper reached for from there drags them in.
func TestManagerLinksNoTestHarness(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v: %s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "controller-runtime/pkg/envtest") || strings.HasSuffix(dep, "selfheal/internal/controlplane") {
			t.Errorf("cmd/manager depends on %s", dep)
		}
	}
}
