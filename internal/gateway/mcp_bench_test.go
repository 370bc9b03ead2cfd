package gateway_test

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/selfheal-dev/selfheal/internal/demo/alerts"
	"github.com/selfheal-dev/selfheal/internal/gateway"
)

// mcpSessionRevision is the MCP revision with sessions (the stateless one has none
// to keep open).
const mcpSessionRevision = "2025-11-25"

// BenchmarkMCPSessionsAcrossReplicas opens 1,000 MCP sessions through two gateway
// replicas that share a session key, in front of one MCP server, and measures what
// an open session costs each of the three and what the gateway adds to a tool call.
//
// The MCP server (the demo's alerts server, the official SDK's Streamable HTTP
// handler) and the two replicas (assembled as the manager does, served on loopback,
// default limits) each run in a process of their own, so each one's heap and
// goroutines are its own. The clients are the official SDK's, in the benchmark's
// process, with its default transport (so each session also holds the standalone
// GET stream the SDK opens after initialize, on replica A). A session is initialized
// through replica A; its tool calls then go alternately through B and A, as through
// a load balancer without sticky sessions, so every session is served by both
// replicas. Before the timed calls each session makes one call through B and one
// through A; the processes are measured then (HeapInuse+StackInuse and goroutines
// after GC, less the same measure before any session), and both replicas and the
// server must count every session, the server no more (a replica that lost a session
// would have made a new one upstream).
//
// The timed calls are open loop: they arrive at a fixed rate, alternating between a
// session through the gateway and, side by side, one of as many sessions opened
// directly on the MCP server (the baseline), and are timed from their scheduled
// arrival. Every call must succeed.
//
//	go test -run '^$' -bench BenchmarkMCPSessionsAcrossReplicas -benchtime 1x ./internal/gateway/
//
// SELFHEAL_BENCH_SESSIONS sets the number of sessions (default 1,000),
// SELFHEAL_BENCH_CALLS the timed calls per session and path (default 2), BENCH_RATE
// the arrival rate of all timed calls (default 500 calls/s).
func BenchmarkMCPSessionsAcrossReplicas(b *testing.B) {
	n := int(benchSetting("SELFHEAL_BENCH_SESSIONS", 1000))
	calls := int(benchSetting("SELFHEAL_BENCH_CALLS", 2))
	rate := benchSetting("BENCH_RATE", 500)
	for b.Loop() {
		up := startBenchChild(b, "mcp-upstream")
		upURL := up.expect(b, "addr")[0]
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		replicas := []*benchChild{
			startBenchChild(b, "mcp-gateway", upURL, base64.StdEncoding.EncodeToString(key)),
			startBenchChild(b, "mcp-gateway", upURL, base64.StdEncoding.EncodeToString(key)),
		}
		var via [2]*url.URL
		for i, r := range replicas {
			via[i], _ = url.Parse(r.expect(b, "addr")[0])
		}
		procs := []*benchChild{up, replicas[0], replicas[1]}
		names := []string{"upstream", "replica A", "replica B"}
		idle := statsOf(b, procs)

		clientsIdle := measure()
		gwSessions := openSessions(b, via[0].String(), newReplicaClient(), n)
		clientHeap, clientGoroutines := perClient(clientsIdle, measure(), n)
		forEach(b, n, func(i int) error {
			if err := callAlerts(viaReplica(context.Background(), via[1]), gwSessions[i]); err != nil {
				return fmt.Errorf("through B: %w", err)
			}
			return callAlerts(viaReplica(context.Background(), via[0]), gwSessions[i])
		})
		open := statsOf(b, procs)
		for i, s := range open {
			if s.count != n {
				b.Fatalf("%s counts %d MCP sessions, want %d", names[i], s.count, n)
			}
		}

		direct := openSessions(b, upURL, &http.Client{Transport: newClientTransport()}, n)
		lat := timedCalls(b, gwSessions, direct, via, calls, rate)
		loaded := statsOf(b, procs)

		for i, name := range names {
			heap, goroutines := perClient(idle[i], open[i], n)
			heapAfter, goroutinesAfter := perClient(idle[i], loaded[i], n)
			b.Logf("%s, %d open sessions: %.0f bytes and %.2f goroutines each (after the timed calls: %.0f bytes, %.2f goroutines)",
				name, n, heap, goroutines, heapAfter, goroutinesAfter)
			b.ReportMetric(heap, fmt.Sprintf("%s-B/session", []string{"upstream", "A", "B"}[i]))
		}
		b.Logf("SDK clients (this process), %d sessions: %.0f bytes and %.2f goroutines each", n, clientHeap, clientGoroutines)
		for _, p := range lat {
			p50, p99 := percentiles(p.lat)
			b.Logf("tool call %s: p50 %s, p99 %s (%d calls at %.0f calls/s in all, open loop)",
				p.name, p50.Round(time.Microsecond), p99.Round(time.Microsecond), len(p.lat), rate)
		}
		gw50, gw99 := percentiles(slices.Concat(lat[0].lat, lat[1].lat))
		d50, d99 := percentiles(lat[2].lat)
		b.ReportMetric(ms(gw50), "gateway-p50-ms")
		b.ReportMetric(ms(gw99), "gateway-p99-ms")
		b.ReportMetric(ms(d50), "direct-p50-ms")
		b.ReportMetric(ms(d99), "direct-p99-ms")
		closeSessions(b, append(gwSessions, direct...))
	}
}

func statsOf(b *testing.B, procs []*benchChild) []procStats {
	out := make([]procStats, len(procs))
	for i, p := range procs {
		out[i] = p.stats(b)
	}
	return out
}

type latencies struct {
	name string
	lat  []time.Duration
}

// timedCalls makes calls per session on both paths, open loop at rate: arrivals
// alternate between a gateway session (session s's k-th call through replica
// (k+s)%2, B first for even s) and a direct one. It fails the benchmark on any error.
func timedCalls(b *testing.B, gw, direct []*sdk.ClientSession, via [2]*url.URL, calls int, rate float64) []latencies {
	n := len(gw)
	paths := []latencies{{name: "through replica A"}, {name: "through replica B"}, {name: "direct to the MCP server"}}
	var mu sync.Mutex
	var failed atomic.Int64
	var firstErr error
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := range 2 * n * calls {
		scheduled := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(scheduled))
		m := i / 2
		s, k := m%n, m/n
		session, path, ctx := direct[s], 2, context.Background()
		if i%2 == 0 {
			r := (k + s + 1) % 2
			session, path, ctx = gw[s], r, viaReplica(ctx, via[r])
		}
		wg.Go(func() {
			err := callAlerts(ctx, session)
			d := time.Since(scheduled)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed.Add(1)
				firstErr = cmp.Or(firstErr, fmt.Errorf("%s: %w", paths[path].name, err))
				return
			}
			paths[path].lat = append(paths[path].lat, d)
		})
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatalf("%d of %d timed calls failed; first: %v", failed.Load(), 2*n*calls, firstErr)
	}
	return paths
}

// callTimeout bounds one tool call: a failure ends the benchmark instead of hanging it.
const callTimeout = time.Minute

// callAlerts calls the alerts tool and checks its answer.
func callAlerts(ctx context.Context, cs *sdk.ClientSession) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: alerts.ToolName, Arguments: map[string]any{}})
	if err != nil {
		return err
	}
	if res.IsError {
		return fmt.Errorf("tool error: %+v", res.Content)
	}
	out, err := alerts.ParseOutput(res.StructuredContent)
	if err != nil {
		return err
	}
	if out.Count == 0 {
		return errors.New("no alerts in the answer")
	}
	return nil
}

// openSessions connects n SDK clients to endpoint, on the session revision.
func openSessions(b *testing.B, endpoint string, hc *http.Client, n int) []*sdk.ClientSession {
	b.Helper()
	sessions := make([]*sdk.ClientSession, n)
	forEach(b, n, func(i int) error {
		client := sdk.NewClient(&sdk.Implementation{Name: "bench-client", Version: "v1"}, nil)
		cs, err := client.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc},
			&sdk.ClientSessionOptions{ProtocolVersion: mcpSessionRevision})
		sessions[i] = cs
		return err
	})
	return sessions
}

func closeSessions(b *testing.B, sessions []*sdk.ClientSession) {
	b.Helper()
	forEach(b, len(sessions), func(i int) error { return sessions[i].Close() })
}

// benchWorkers bounds the concurrency of set-up work.
const benchWorkers = 16

// forEach runs f for 0..n-1 on benchWorkers goroutines and fails the benchmark with
// the first error.
func forEach(b *testing.B, n int, f func(i int) error) {
	b.Helper()
	var next atomic.Int64
	errs := make([]error, benchWorkers)
	var wg sync.WaitGroup
	for w := range benchWorkers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if err := f(i); err != nil {
					errs[w] = fmt.Errorf("%d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
}

// replicaKey carries, in a request's context, the replica that serves it.
type replicaKey struct{}

func viaReplica(ctx context.Context, replica *url.URL) context.Context {
	return context.WithValue(ctx, replicaKey{}, replica)
}

// replicaRouter sends each request to the replica its context names (the endpoint's
// otherwise), as a load balancer without sticky sessions would, with the client's
// gateway token.
type replicaRouter struct{ next http.RoundTripper }

func (r replicaRouter) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	if u, ok := req.Context().Value(replicaKey{}).(*url.URL); ok {
		req.URL.Host, req.Host = u.Host, ""
	}
	req.Header.Set("Authorization", "Bearer tok-full")
	return r.next.RoundTrip(req)
}

func newReplicaClient() *http.Client {
	return &http.Client{Transport: replicaRouter{next: newClientTransport()}}
}

func newClientTransport() *http.Transport {
	return &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
}

// runMCPUpstream serves the alerts MCP server; it counts its sessions.
func runMCPUpstream(t *testing.T, _ []string, ctl *benchControl) {
	srv, err := alerts.Start(alerts.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Close() }()
	ctl.say("addr", srv.URL())
	ctl.serve(srv.Sessions, nil)
}

// runMCPGateway serves a gateway replica in front of the MCP server at args[0], with
// the session key args[1]; it counts the sessions it remembers.
func runMCPGateway(t *testing.T, args []string, ctl *benchControl) {
	keyFile := filepath.Join(t.TempDir(), "session-key")
	if err := os.WriteFile(keyFile, []byte(args[1]), 0o600); err != nil {
		t.Fatal(err)
	}
	g, _ := startHealingGateway(t, fmt.Sprintf(`
anthropic: {baseURL: UPSTREAM, apiKey: {env: TEST_ANTHROPIC_KEY}}
auth: {tokensFile: TOKENS}
upstreams:
- {name: alerts, url: %s, namespace: tools-ns, service: alerts}
sessions: {keyFile: %s}
`, args[0], keyFile), gateway.WithLogger(logr.Discard()))
	ctl.say("addr", g.url+"/mcp/alerts")
	ctl.serve(func() int { return int(gaugeValue(t, "selfheal_gateway_mcp_sessions")) }, nil)
}

// gaugeValue reads an unlabelled gauge from the manager's registry.
func gaugeValue(t *testing.T, name string) float64 {
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
