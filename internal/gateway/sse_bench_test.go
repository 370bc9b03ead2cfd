package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/selfheal-dev/selfheal/internal/gateway"
	"github.com/selfheal-dev/selfheal/internal/gateway/healing"
	"github.com/selfheal-dev/selfheal/internal/sse"
)

// BenchmarkIdleSSESubscribers measures what one idle subscriber of
// GET /v1/healing/events costs the gateway, and how long one healing event takes to
// reach all of them. The gateway is assembled as the manager does (auth with a token,
// the connection and subscriber caps raised to fit, the hub, the real events
// handler) and serves on loopback; the subscribers are net/http clients in another
// process, one connection each, all with the same token. Every subscriber must have
// read the stream's opening comment, and the hub must count all of them, before the
// gateway's process is measured (HeapInuse+StackInuse and goroutines after GC, less
// the same measure before any subscriber); then one healing_start is published and
// every subscriber must receive it: its delivery latency is the time from the event's
// publication (the time it carries) to its reading by the subscriber.
//
// Side by side, in a process of its own, the baseline: as many idle streams held by
// a trivial net/http handler on a plain http.Server, and one event written to all of
// them when a channel closes.
//
//	go test -run '^$' -bench BenchmarkIdleSSESubscribers -benchtime 1x ./internal/gateway/
//
// SELFHEAL_BENCH_SUBSCRIBERS sets the number (default 10,000).
func BenchmarkIdleSSESubscribers(b *testing.B) {
	n := int(benchSetting("SELFHEAL_BENCH_SUBSCRIBERS", 10000))
	for b.Loop() {
		plain := measureSubscribers(b, "sse-plain", n)
		gw := measureSubscribers(b, "sse-gateway", n)
		b.ReportMetric(gw.heap, "B/subscriber")
		b.ReportMetric(gw.goroutines, "goroutines/subscriber")
		b.ReportMetric(ms(gw.p50), "fanout-p50-ms")
		b.ReportMetric(ms(gw.p99), "fanout-p99-ms")
		b.ReportMetric(plain.heap, "plain-B/subscriber")
		b.ReportMetric(ms(plain.p99), "plain-fanout-p99-ms")
		for _, f := range []struct {
			name string
			subscriberFigures
		}{{"gateway", gw}, {"plain net/http", plain}} {
			b.Logf("%s, %d idle subscribers: %.0f bytes and %.2f goroutines each; one event reached all of them, delivery p50 %s, p99 %s, last %s",
				f.name, n, f.heap, f.goroutines, f.p50.Round(time.Microsecond), f.p99.Round(time.Microsecond), f.last.Round(time.Microsecond))
		}
	}
}

type subscriberFigures struct {
	heap, goroutines float64
	p50, p99, last   time.Duration
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

// measureSubscribers runs the events server role in a child, n subscribers in
// another, and returns what the server holds per subscriber and the delivery of one
// event to all of them.
func measureSubscribers(b *testing.B, role string, n int) subscriberFigures {
	b.Helper()
	server := startBenchChild(b, role, strconv.Itoa(n))
	addr := server.expect(b, "addr")
	idle := server.stats(b)
	clients := startBenchChild(b, "sse-clients", addr[0], addr[1], strconv.Itoa(n))
	clients.expect(b, "ready")
	loaded := server.stats(b)
	if loaded.count != n {
		b.Fatalf("%s: %d subscribers registered, want %d", role, loaded.count, n)
	}
	server.ask(b, "publish", "published")
	d := clients.expect(b, "delivered")
	if got := int(atoi64(b, d[0])); got != n {
		b.Fatalf("%s: the event reached %d of %d subscribers", role, got, n)
	}
	clients.stop(b)
	server.stop(b)
	f := subscriberFigures{p50: time.Duration(atoi64(b, d[1])), p99: time.Duration(atoi64(b, d[2])), last: time.Duration(atoi64(b, d[3]))}
	f.heap, f.goroutines = perClient(idle, loaded, n)
	return f
}

// runSSEGateway serves the gateway's event stream, its caps raised for n subscribers
// of one client.
func runSSEGateway(t *testing.T, args []string, ctl *benchControl) {
	n, _ := strconv.Atoi(args[0])
	raiseFDLimit(t, uint64(n)+256)
	g, hub := startHealingGateway(t, fmt.Sprintf(`
anthropic: {baseURL: UPSTREAM, apiKey: {env: TEST_ANTHROPIC_KEY}}
auth: {tokensFile: TOKENS}
limits: {maxConnections: %d, maxSubscribers: %d, maxSubscribersPerClient: %d}
`, n+64, n, n), gateway.WithLogger(logr.Discard()))
	ctl.say("addr", g.url+"/v1/healing/events?service=tools", "tok-full")
	ctl.serve(hub.Subscribers, func() {
		hub.Publish(healing.Event{ID: "tools-ns/tools-1/0", Type: healing.EventHealingStart, Request: "tools-1",
			Namespace: "tools-ns", Service: "tools", Time: time.Now()})
	})
}

// runSSEPlain is the baseline: a trivial handler on a plain http.Server holds each
// stream open and writes one event to all of them when published.
func runSSEPlain(t *testing.T, args []string, ctl *benchControl) {
	n, _ := strconv.Atoi(args[0])
	raiseFDLimit(t, uint64(n)+256)
	var open atomic.Int64
	fire := make(chan struct{})
	var event string // written before fire is closed
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		open.Add(1)
		defer open.Add(-1)
		sw := sse.Start(w)
		_ = sw.Comment("connected")
		_ = sw.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-fire:
		}
		_ = sw.Event(sse.Event{Type: healing.EventHealingStart, Data: event})
		_ = sw.Flush()
		<-r.Context().Done()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()
	ctl.say("addr", "http://"+ln.Addr().String()+"/", "none")
	ctl.serve(func() int { return int(open.Load()) }, func() {
		data, _ := json.Marshal(healing.Event{Type: healing.EventHealingStart, Time: time.Now()})
		event = string(data)
		close(fire)
	})
}

// sseClientsDeadline bounds a subscribers process: a failure ends it instead of
// hanging the benchmark.
const sseClientsDeadline = 10 * time.Minute

// runSSEClients opens n event streams to a URL with a token, one connection each,
// says "ready" once every one has read the stream's opening comment, then
// "delivered" with how many received the first event and the p50, p99 and last of
// their delivery latencies (ns), and holds the streams until the benchmark ends.
func runSSEClients(t *testing.T, args []string, ctl *benchControl) {
	url, token := args[0], args[1]
	n, _ := strconv.Atoi(args[2])
	raiseFDLimit(t, uint64(n)+256)
	ctx, cancel := context.WithTimeout(context.Background(), sseClientsDeadline)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	streams := make([]*sse.Reader, n)
	for i := range streams {
		s, err := openEventStream(ctx, client, url, token)
		if err != nil {
			ctl.say("error", fmt.Sprintf("subscriber %d of %d: %v", i+1, n, err))
			return
		}
		streams[i] = s
	}
	latencies := make([]time.Duration, n)
	var received atomic.Int64
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Go(func() {
			if d, err := firstEventLatency(s); err == nil {
				latencies[i] = d
				received.Add(1)
			}
		})
	}
	ctl.say("ready")
	wg.Wait()
	p50, p99 := percentiles(latencies)
	ctl.say("delivered", received.Load(), int64(p50), int64(p99), int64(slices.Max(latencies)))
	ctl.waitForEnd()
}

// openEventStream subscribes and reads the stream's opening comment. The body stays
// open until ctx ends.
func openEventStream(ctx context.Context, client *http.Client, url, token string) (*sse.Reader, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", sse.ContentType)
	res, err := client.Do(req) //nolint:bodyclose // an open stream, ended with ctx
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		_ = res.Body.Close()
		return nil, fmt.Errorf("%d %s", res.StatusCode, body)
	}
	r := sse.NewReader(res.Body)
	f, err := r.NextFrame()
	if err != nil {
		return nil, err
	}
	if !slices.Contains(f.Comments, "connected") {
		return nil, fmt.Errorf("stream opened with %q, want the connected comment", f.Bytes)
	}
	return r, nil
}

// firstEventLatency reads the next event, a healing_start, and returns how long after
// its publication (the time it carries) it was read.
func firstEventLatency(r *sse.Reader) (time.Duration, error) {
	ev, err := r.Next()
	if err != nil {
		return 0, err
	}
	read := time.Now()
	var e healing.Event
	if err := json.Unmarshal([]byte(ev.Data), &e); err != nil {
		return 0, err
	}
	if ev.Type != healing.EventHealingStart || e.Time.IsZero() {
		return 0, errors.New("not the published healing_start: " + ev.Data)
	}
	return read.Sub(e.Time), nil
}
