package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/selfheal-dev/selfheal/internal/gateway"
)

// BenchmarkAddedLatency measures what the gateway adds on loopback: each
// iteration makes one direct call to a fake Anthropic and one through the
// gateway to the same fake, paced at 1,000 calls/s, and reports the p50/p99
// of each and their difference. For streams the time is to the first body
// byte (the first SSE event).
//
//	go test -run '^$' -bench BenchmarkAddedLatency -benchtime 3000x ./internal/gateway/
func BenchmarkAddedLatency(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("request-id", "req_bench")
		if !strings.Contains(string(body), `"stream":true`) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, messageJSON)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range streamPrelude {
			_, _ = io.WriteString(w, ev)
		}
		_ = http.NewResponseController(w).Flush()
		for _, ev := range streamContent {
			_, _ = io.WriteString(w, ev)
			_ = http.NewResponseController(w).Flush()
		}
	}))
	defer up.Close()

	dir := b.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("bench:"+clientToken+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := gateway.ParseConfig([]byte(fmt.Sprintf(`
anthropic:
  baseURL: %s
  apiKey: {env: K}
auth: {tokensFile: %s}
`, up.URL, tokens)), func(string) string { return canaryKey })
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv, err := gateway.New(cfg, gateway.WithListener(ln), gateway.WithLogger(logr.Discard()))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	defer func() { cancel(); <-done }()
	gwURL := "http://" + ln.Addr().String()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for _, stream := range []bool{false, true} {
		name := "plain"
		body := `{"model":"claude-test-1","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`
		if stream {
			name = "stream-ttfb"
			body = `{"model":"claude-test-1","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
		}
		call := func(base string) time.Duration {
			req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Anthropic-Version", "2023-06-01")
			req.Header.Set("X-Api-Key", clientToken)
			start := time.Now()
			res, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			br := bufio.NewReader(res.Body)
			if _, err := br.ReadByte(); err != nil {
				b.Fatal(err)
			}
			ttfb := time.Since(start)
			rest, _ := io.ReadAll(br)
			total := time.Since(start)
			_ = res.Body.Close()
			if res.StatusCode != 200 || (stream && !strings.Contains(string(rest), "message_stop")) {
				b.Fatalf("bad response %d", res.StatusCode)
			}
			if stream {
				return ttfb
			}
			return total
		}
		b.Run(name, func(b *testing.B) {
			for range 50 { // warm connections on both paths
				call(up.URL)
				call(gwURL)
			}
			direct := make([]time.Duration, 0, b.N)
			via := make([]time.Duration, 0, b.N)
			const interval = time.Millisecond // 1,000 calls/s
			next := time.Now()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%2 == 0 {
					direct = append(direct, call(up.URL))
					via = append(via, call(gwURL))
				} else {
					via = append(via, call(gwURL))
					direct = append(direct, call(up.URL))
				}
				next = next.Add(interval)
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
			}
			b.StopTimer()
			dp50, dp99 := percentiles(direct)
			gp50, gp99 := percentiles(via)
			b.ReportMetric(float64(dp50.Microseconds()), "p50-direct-µs")
			b.ReportMetric(float64(dp99.Microseconds()), "p99-direct-µs")
			b.ReportMetric(float64(gp50.Microseconds()), "p50-gateway-µs")
			b.ReportMetric(float64(gp99.Microseconds()), "p99-gateway-µs")
			b.ReportMetric(float64((gp50 - dp50).Microseconds()), "p50-added-µs")
			b.ReportMetric(float64((gp99 - dp99).Microseconds()), "p99-added-µs")
		})
	}
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)*50/100], s[min(len(s)-1, len(s)*99/100)]
}
