package gateway_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/selfheal-dev/selfheal/internal/gateway"
	"github.com/selfheal-dev/selfheal/internal/gateway/healing"
	"github.com/selfheal-dev/selfheal/internal/gateway/limits"
	"github.com/selfheal-dev/selfheal/internal/gateway/mcp"
	"github.com/selfheal-dev/selfheal/internal/sse"
)

const scopedTokens = "full:tok-full\nscoped:tok-scoped\nb:tok-b\nc:tok-c\n"

// startHealingGateway assembles the gateway as the manager does (hub, healer
// without a cluster, events, reports, MCP with the configured sessions and limits),
// from yaml; opts come last (a benchmark discards the debug log).
func startHealingGateway(t testing.TB, yaml string, opts ...gateway.Option) (*gw, *healing.Hub) {
	t.Helper()
	up := newFakeAnthropic(t)
	var g *gw
	hub := healing.NewHub(healing.HubOptions{})
	mount := func(cfg *gateway.Config) []gateway.Option {
		healer := healing.New(healing.Options{Hub: hub, Namespaces: cfg.HealingNamespaces(), Targets: cfg.HealingTargets()})
		budget := limits.NewBudget(cfg.Limits.GetMaxBufferedBytes())
		streams := healing.StreamOptions{Budget: budget, Streams: limits.NewStreams("sse", cfg.Limits.GetMaxSubscribers(), cfg.Limits.GetMaxSubscribersPerClient())}
		var ups []mcp.Upstream
		for _, u := range cfg.Upstreams {
			ups = append(ups, mcp.Upstream{Name: u.Name, URL: u.URL, Namespace: u.Namespace, Service: u.Service,
				CallTimeout: u.GetCallTimeout(), Replay: mcp.ReplayMode(u.GetReplay())})
		}
		proxy, err := mcp.NewProxy(mcp.Options{Upstreams: ups, Budget: budget, AllowedOrigins: cfg.AllowedOrigins,
			SessionKey: cfg.Sessions.Key(), MaxSessions: cfg.Limits.GetMaxSessions(), SessionIdleTimeout: cfg.Limits.GetSessionIdleTimeout()})
		if err != nil {
			t.Fatal(err)
		}
		return []gateway.Option{
			gateway.WithBudget(budget),
			gateway.Mount("GET /v1/healing/events", healing.NewEventsHandler(hub, streams)),
			gateway.Mount("POST /v1/healing-requests", healing.NewReportHandler(healer, streams)),
			gateway.Mount("/mcp/{name}", proxy),
			gateway.OnShutdown(hub.Close),
		}
	}
	g = startGateway(t, up.srv.URL, gwSetup{tokens: scopedTokens, yaml: yaml, configure: mount, opts: opts})
	return g, hub
}

// subscribe opens an event stream; it returns the status and, on 200, a reader.
func subscribe(t *testing.T, g *gw, token, query string) (int, string, *sse.Reader, func()) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, g.url+"/v1/healing/events"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed below, or by the returned func
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		b := make([]byte, 512)
		n, _ := res.Body.Read(b)
		_ = res.Body.Close()
		return res.StatusCode, string(b[:n]), nil, func() {}
	}
	return 200, "", sse.NewReader(res.Body), func() { _ = res.Body.Close() }
}

// Event streams are capped in total and per client; a closed stream frees its
// place. Catches: unbounded subscribers (the 5,000 accepted).
func TestEventStreamCaps(t *testing.T) {
	g, hub := startHealingGateway(t, `
anthropic: {baseURL: UPSTREAM, apiKey: {env: TEST_ANTHROPIC_KEY}}
auth: {tokensFile: TOKENS}
limits: {maxSubscribers: 20, maxSubscribersPerClient: 15}
`)
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	open, refusedClient := 0, 0
	for range 100 {
		status, body, _, closeFn := subscribe(t, g, "tok-b", "")
		switch {
		case status == 200:
			open++
			closers = append(closers, closeFn)
		case status == 503 && strings.Contains(body, "per client"):
			refusedClient++
		default:
			t.Fatalf("subscriber over the per-client cap: %d %s", status, body)
		}
	}
	if open != 15 || refusedClient != 85 {
		t.Fatalf("client b: %d streams open, %d refused; want 15 and 85", open, refusedClient)
	}
	refusedTotal := 0
	for range 100 {
		status, body, _, closeFn := subscribe(t, g, "tok-c", "")
		switch {
		case status == 200:
			open++
			closers = append(closers, closeFn)
		case status == 503 && strings.Contains(body, "gateway's limit"):
			refusedTotal++
		default:
			t.Fatalf("subscriber over the total cap: %d %s", status, body)
		}
	}
	if open != 20 || refusedTotal != 95 {
		t.Fatalf("%d streams open, %d refused by the total cap; want 20 and 95", open, refusedTotal)
	}
	waitUntil(t, func() bool { return hub.Subscribers() == 20 })
	closers[0]()
	waitUntil(t, func() bool { return hub.Subscribers() == 19 })
	waitUntil(t, func() bool {
		status, _, _, closeFn := subscribe(t, g, "tok-c", "")
		closers = append(closers, closeFn)
		return status == 200
	})
}

// nextEvent returns the next event's type and data.
func nextEvent(t *testing.T, r *sse.Reader) (string, string) {
	t.Helper()
	ev, err := r.Next()
	if err != nil {
		t.Fatalf("stream ended: %v", err)
	}
	return ev.Type, ev.Data
}

// scopedConfig limits the token "scoped" to the upstream tools (team-a), of two.
const scopedConfig = `
anthropic: {baseURL: UPSTREAM, apiKey: {env: TEST_ANTHROPIC_KEY}}
auth:
  tokensFile: TOKENS
  clients:
  - name: scoped
    upstreams: [tools]
upstreams:
- {name: tools, url: "http://127.0.0.1:1/mcp", namespace: team-a, service: tools}
- {name: billing, url: "http://127.0.0.1:1/mcp", namespace: team-b, service: billing}
`

// A scoped token sees only its upstreams' healings, reports only their Services and
// calls only its upstreams; nobody reports a Service the config does not name.
// Catches: every client seeing every namespace; any Service in an allowed namespace
// (or "default") being reportable; 503 with a doubled message instead of 403.
func TestScopedTokens(t *testing.T) {
	g, hub := startHealingGateway(t, scopedConfig+`healing:
  targets:
  - {namespace: team-b, service: billing-db}
`)
	status, body, scoped, closeScoped := subscribe(t, g, "tok-scoped", "")
	if status != 200 {
		t.Fatalf("scoped subscribe: %d %s", status, body)
	}
	defer closeScoped()
	_, _, full, closeFull := subscribe(t, g, "tok-full", "")
	defer closeFull()
	if status, body, _, _ := subscribe(t, g, "tok-scoped", "?namespace=team-b"); status != 403 || !strings.Contains(body, "team-b") {
		t.Fatalf("scoped client asking for team-b: %d %s", status, body)
	}
	waitUntil(t, func() bool { return hub.Subscribers() == 2 })
	hub.Publish(healing.Event{Type: healing.EventHealingStart, Request: "billing-1", Namespace: "team-b", Service: "billing", Message: "secret-of-team-b"})
	hub.ProcessingDelay("anthropic", 1, time.Second, "overloaded")
	hub.Publish(healing.Event{Type: healing.EventHealingStart, Request: "tools-1", Namespace: "team-a", Service: "tools"})
	if typ, data := nextEvent(t, scoped); typ != healing.EventHealingStart || !strings.Contains(data, `"tools-1"`) {
		t.Fatalf("scoped client's first event: %s %s, want only team-a/tools", typ, data)
	}
	for _, want := range []string{"billing-1", healing.EventProcessingDelay, "tools-1"} {
		if typ, data := nextEvent(t, full); !strings.Contains(typ+data, want) {
			t.Fatalf("unscoped client: %s %s, want %s", typ, data, want)
		}
	}

	report := func(token, ns, svc string) (int, string) {
		status, _, b := do(t, http.MethodPost, g.url+"/v1/healing-requests",
			map[string]string{"Authorization": "Bearer " + token, "Content-Type": "application/json", "Accept": "application/json"},
			`{"namespace":"`+ns+`","service":"`+svc+`","failureClass":"ConnectionRefused","upstream":"x"}`)
		return status, b
	}
	for _, tc := range []struct {
		token, ns, svc string
		status         int
		says           string
	}{
		{"tok-scoped", "team-b", "billing", 403, `outside the scope of client \"scoped\"`},
		{"tok-scoped", "team-b", "billing-db", 403, "outside the scope"},
		{"tok-full", "team-a", "payments", 403, "not a configured upstream's Service"},
		{"tok-full", "default", "tools", 403, "not one the gateway heals in"},
		// In scope, but no cluster here: unavailable, said once.
		{"tok-scoped", "team-a", "tools", 503, "healing unavailable: the gateway cannot create"},
		{"tok-full", "team-b", "billing-db", 503, "healing unavailable: the gateway cannot create"},
	} {
		status, b := report(tc.token, tc.ns, tc.svc)
		if status != tc.status || !strings.Contains(b, tc.says) || strings.Count(b, "healing unavailable") > 1 {
			t.Errorf("%s reporting %s/%s: %d %s, want %d saying %q", tc.token, tc.ns, tc.svc, status, b, tc.status, tc.says)
		}
	}

	status, _, b := do(t, http.MethodPost, g.url+"/mcp/billing", map[string]string{"Authorization": "Bearer tok-scoped", "Content-Type": "application/json"},
		`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	if status != 403 || !strings.Contains(b, "outside the scope") {
		t.Fatalf("scoped client calling billing: %d %s", status, b)
	}
}
