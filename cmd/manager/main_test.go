package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	ctrl "sigs.k8s.io/controller-runtime"
)

type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) add(prefix, args string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, prefix+" "+args)
}

func (l *logLines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// Running the gateway without a cluster is supported: it logs why healing is
// unavailable and no error (controller-runtime's "unable to load in-cluster config"
// with a stack trace). Catches: asking controller-runtime for a config that is not there.
func TestGatewayWithoutClusterLogsNoError(t *testing.T) {
	logs := &logLines{}
	ctrl.SetLogger(funcr.New(logs.add, funcr.Options{}))
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("TEST_KEY", "sk-test")
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("t:tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfg, []byte("anthropic: {apiKey: {env: TEST_KEY}}\nauth: {tokensFile: "+tokens+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runGatewayOnly(ctx, options{gatewayConfig: cfg, gatewayAddr: addr, metricsAddr: "0", metricsSecure: true})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/readyz") //nolint:noctx
		if err == nil {
			_ = res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready within 30s; logs:\n%s", strings.Join(logs.all(), "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("runGatewayOnly: %v", err)
	}
	all := strings.Join(logs.all(), "\n")
	if strings.Contains(all, `"error"`) || strings.Contains(all, "in-cluster") {
		t.Fatalf("an error was logged on a supported path:\n%s", all)
	}
	if !strings.Contains(all, "No Kubernetes cluster configured") {
		t.Fatalf("the log does not say healing is unavailable:\n%s", all)
	}
}

// Metrics are served as the kubebuilder v4 scaffold serves them unless asked not to.
func TestMetricsOptionsSecureByDefault(t *testing.T) {
	m := metricsOptions(options{metricsAddr: ":8443", metricsSecure: true})
	if !m.SecureServing || m.FilterProvider == nil || m.CertDir != "" {
		t.Fatalf("secure metrics: %+v", m)
	}
	m = metricsOptions(options{metricsAddr: ":8443", metricsSecure: true, metricsCertPath: "/certs", metricsCertName: "tls.crt", metricsCertKey: "tls.key"})
	if m.CertDir != "/certs" || m.CertName != "tls.crt" || m.KeyName != "tls.key" {
		t.Fatalf("cert path not used: %+v", m)
	}
	if m := metricsOptions(options{metricsAddr: ":8080"}); m.SecureServing || m.FilterProvider != nil {
		t.Fatalf("--metrics-secure=false: %+v", m)
	}
}
