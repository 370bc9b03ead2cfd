package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// An MCP call through the assembled gateway goes out through the outbound transport
// and moves the upstream metrics under the configured upstream's name. Catches: the
// MCP proxy with a transport and no metrics of its own (as it had), or metrics
// labelled by URL.
func TestMCPCallMovesTheUpstreamMetrics(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	}))
	defer up.Close()
	dir := t.TempDir()
	t.Setenv("TEST_KEY", "sk-test")
	cfg := filepath.Join(dir, "gateway.yaml")
	yaml := "anthropic: {apiKey: {env: TEST_KEY}}\nauth: {mode: none}\n" +
		"upstreams:\n- {name: metered, url: " + up.URL + "/mcp, namespace: tools-ns, service: metered}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	g, _, err := buildGateway(nil, options{gatewayConfig: cfg, gatewayAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.server.Handler())
	defer srv.Close()

	requests := func() float64 {
		c, _ := sample(t, "selfheal_gateway_upstream_requests_total", "metered", "200")
		return c
	}
	latencies := func() uint64 {
		_, n := sample(t, "selfheal_gateway_upstream_request_duration_seconds", "metered", "")
		return n
	}
	beforeReq, beforeLat := requests(), latencies()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/mcp/metered", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `"result"`) {
		t.Fatalf("MCP call: %d %s", res.StatusCode, body)
	}
	if got := requests() - beforeReq; got != 1 {
		t.Fatalf("upstream_requests_total{upstream=metered,code=200} moved by %v, want 1", got)
	}
	if got := latencies() - beforeLat; got != 1 {
		t.Fatalf("upstream_request_duration_seconds{upstream=metered} observed %d times, want 1", got)
	}
}

// sample reads the series of metric name for upstream (and code, when not empty) in
// the manager's registry: a counter's value and a histogram's sample count. A
// series not there yet reads as zero.
func sample(t *testing.T, name, upstream, code string) (float64, uint64) {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if (l.GetName() == "upstream" && l.GetValue() != upstream) || (code != "" && l.GetName() == "code" && l.GetValue() != code) {
					continue series
				}
			}
			return m.GetCounter().GetValue(), m.GetHistogram().GetSampleCount()
		}
	}
	return 0, 0
}
