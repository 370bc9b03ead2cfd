package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/selfheal-dev/selfheal/internal/gateway"
	"github.com/selfheal-dev/selfheal/internal/gateway/outbound"
)

// BenchmarkAddedLatency measures what the gateway adds on loopback, side by side
// with a plain httputil.ReverseProxy in the same run. Requests arrive on a fixed
// schedule (open loop): one every 1/rate, rotating over the three paths (direct
// to the fake Anthropic, through the gateway, through the plain proxy), each sent
// at its scheduled time whatever the others are doing, and timed from that
// scheduled time, so a slow path cannot hide its queueing by slowing the arrivals.
// JSON calls are timed to the end of the body; streams to the first body byte.
// b.N is the number of requests per path.
//
//	go test -run '^$' -bench BenchmarkAddedLatency -benchtime 3000x ./internal/gateway/
//
// BENCH_RATE sets the total arrival rate (default 1000 requests/s).
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

	// The plain proxy: the standard library's, with the gateway's outbound transport.
	upURL, _ := url.Parse(up.URL)
	plain := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(upURL) },
		Transport: outbound.NewTransport(outbound.Options{}),
	})
	defer plain.Close()

	rate := benchSetting("BENCH_RATE", 1000)
	paths := []struct{ name, base string }{{"direct", up.URL}, {"gateway", "http://" + ln.Addr().String()}, {"plain-proxy", plain.URL}}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxIdleConns: 2048}}
	for _, stream := range []bool{false, true} {
		name := "json"
		body := `{"model":"claude-test-1","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`
		if stream {
			name = "stream-ttfb"
			body = `{"model":"claude-test-1","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
		}
		// call returns the time from the scheduled arrival to the end of a JSON body,
		// or to the first byte of a stream.
		call := func(base string, scheduled time.Time) (time.Duration, error) {
			req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Anthropic-Version", "2023-06-01")
			req.Header.Set("X-Api-Key", clientToken)
			res, err := client.Do(req)
			if err != nil {
				return 0, err
			}
			defer func() { _ = res.Body.Close() }()
			br := bufio.NewReader(res.Body)
			if _, err := br.ReadByte(); err != nil {
				return 0, err
			}
			ttfb := time.Since(scheduled)
			rest, _ := io.ReadAll(br)
			if res.StatusCode != 200 || (stream && !strings.Contains(string(rest), "message_stop")) {
				return 0, fmt.Errorf("bad response %d", res.StatusCode)
			}
			if stream {
				return ttfb, nil
			}
			return time.Since(scheduled), nil
		}
		b.Run(name, func(b *testing.B) {
			for range 100 { // warm connections on every path
				for _, p := range paths {
					if _, err := call(p.base, time.Now()); err != nil {
						b.Fatal(err)
					}
				}
			}
			lat := make([][]time.Duration, len(paths))
			for i := range lat {
				lat[i] = make([]time.Duration, b.N)
			}
			interval := time.Duration(float64(time.Second) / rate)
			var wg sync.WaitGroup
			var failed atomic.Value
			b.ResetTimer()
			start := time.Now()
			for i := range b.N * len(paths) {
				scheduled := start.Add(time.Duration(i) * interval)
				if d := time.Until(scheduled); d > 0 {
					time.Sleep(d)
				}
				p, n := i%len(paths), i/len(paths)
				wg.Add(1)
				go func() {
					defer wg.Done()
					d, err := call(paths[p].base, scheduled)
					if err != nil {
						failed.CompareAndSwap(nil, err)
					}
					lat[p][n] = d
				}()
			}
			wg.Wait()
			b.StopTimer()
			if err, _ := failed.Load().(error); err != nil {
				b.Fatal(err)
			}
			p50 := make([]time.Duration, len(paths))
			p99 := make([]time.Duration, len(paths))
			for i := range paths {
				p50[i], p99[i] = percentiles(lat[i])
			}
			us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
			b.ReportMetric(us(p50[0]), "p50-direct-µs")
			b.ReportMetric(us(p99[0]), "p99-direct-µs")
			b.ReportMetric(us(p50[1]-p50[0]), "p50-added-gateway-µs")
			b.ReportMetric(us(p99[1]-p99[0]), "p99-added-gateway-µs")
			b.ReportMetric(us(p50[2]-p50[0]), "p50-added-plain-µs")
			b.ReportMetric(us(p99[2]-p99[0]), "p99-added-plain-µs")
			b.Logf("%s at %.0f req/s (open loop, %d per path): p50/p99 direct %s/%s, gateway %s/%s (+%s/+%s), plain ReverseProxy %s/%s (+%s/+%s)",
				name, rate, b.N, p50[0], p99[0], p50[1], p99[1], p50[1]-p50[0], p99[1]-p99[0], p50[2], p99[2], p50[2]-p50[0], p99[2]-p99[0])
		})
	}
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)*50/100], s[min(len(s)-1, len(s)*99/100)]
}
