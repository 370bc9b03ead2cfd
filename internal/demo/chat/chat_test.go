package chat_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/selfheal-dev/selfheal/internal/demo/alerts"
	"github.com/selfheal-dev/selfheal/internal/demo/chat"
	"github.com/selfheal-dev/selfheal/internal/demo/fakeclaude"
)

const (
	gatewayToken = "gw-client-token"
	upstreamKey  = "sk-ant-upstream-key"
)

// stand-in gateway: checks the client's bearer token, injects the upstream key for
// /v1/, and proxies /mcp/sandfly to the alerts server. It is not the real gateway
// (internal/gateway), only enough routing to test the client against real peers.
type standIn struct {
	*httptest.Server
	onEvents http.HandlerFunc
	beforeV1 func()
}

func newStandIn(t *testing.T, claude *fakeclaude.Server, mcpURL string) *standIn {
	t.Helper()
	claudeURL, _ := url.Parse(claude.URL())
	mcpTarget, _ := url.Parse(mcpURL)
	s := &standIn{}
	v1 := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(claudeURL)
		r.Out.Header.Del("Authorization")
		r.Out.Header.Set("x-api-key", upstreamKey)
	}}
	mcpProxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(mcpTarget)
		r.Out.URL.Path = mcpTarget.Path
		r.Out.Header.Del("Authorization")
	}, FlushInterval: -1, ErrorLog: log.New(io.Discard, "", 0)}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/healing/events", func(w http.ResponseWriter, r *http.Request) { s.onEvents(w, r) })
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		if s.beforeV1 != nil {
			s.beforeV1()
		}
		v1.ServeHTTP(w, r)
	})
	mux.Handle("/mcp/sandfly", mcpProxy)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+gatewayToken {
			http.Error(w, `{"error":"missing or bad bearer token"}`, http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, s)
}

func (l *lines) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.l...)
}

func TestAskRunsTheToolLoop(t *testing.T) {
	for _, tc := range []struct {
		stream    bool
		stateless bool
		revision  string
	}{
		{false, false, "2025-11-25"},
		{true, false, "2025-11-25"},
		{false, true, "2026-07-28"},
		{true, true, ""},
	} {
		t.Run(fmt.Sprintf("stream=%v stateless=%v revision=%q", tc.stream, tc.stateless, tc.revision), func(t *testing.T) {
			g := NewWithT(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			claude, err := fakeclaude.Start(fakeclaude.Options{APIKey: upstreamKey})
			g.Expect(err).NotTo(HaveOccurred())
			defer claude.Close()
			srv, err := alerts.Start(alerts.Options{Stateless: tc.stateless})
			g.Expect(err).NotTo(HaveOccurred())
			defer srv.Close()
			gw := newStandIn(t, claude, srv.URL())

			notices, steps := &lines{}, &lines{}
			c := &chat.Client{
				GatewayURL: gw.URL, Token: gatewayToken, Upstream: "sandfly", Model: fakeclaude.Model,
				Stream: tc.stream, MCPProtocolVersion: tc.revision,
				OnNotice: notices.add, OnStep: steps.add,
			}
			defer c.Close()
			answer, err := c.Ask(ctx, "What security alerts do we have?")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(answer).To(HavePrefix("You have 5 open security alert(s): 1 critical, 2 high, 1 medium, 1 low."))
			g.Expect(answer).To(ContainSubstring("web-prod-03"))

			reqs := claude.Requests()
			g.Expect(reqs).To(HaveLen(2))
			g.Expect(reqs[0]).To(And(HaveField("Outcome", "tool_use"), HaveField("Auth", "x-api-key"), HaveField("Stream", tc.stream)))
			g.Expect(reqs[1]).To(And(HaveField("Outcome", "end_turn"), HaveField("Messages", 3)))
			g.Expect(srv.Calls()).To(Equal(1))
			g.Eventually(notices.get).Should(Equal([]string{"querying sandfly for open alerts", "sorting alerts by severity"}))
			g.Expect(steps.get()).To(Equal([]string{
				"asking Claude (1 message(s), 1 tool(s))",
				"calling MCP tool get_security_alerts on sandfly",
				fmt.Sprintf("tool get_security_alerts answered (%d bytes)", len(alerts.FormatText(mustAlerts("")))),
				"asking Claude (3 message(s), 1 tool(s))",
			}))

			// A filtered question: the tool input and the answer follow.
			answer, err = c.Ask(ctx, "Which critical alerts are open?")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(answer).To(Equal("You have 1 open security alert(s): 1 critical.\nMost urgent: sf-1041 on web-prod-03 (critical): Suspicious process kworkerds running from /dev/shm."))
		})
	}
}

func mustAlerts(sev string) []alerts.Alert {
	a, err := alerts.Alerts(sev)
	if err != nil {
		panic(err)
	}
	return a
}

func TestAskFailsWithoutTokenOrWhenTheToolCallFails(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	claude, err := fakeclaude.Start(fakeclaude.Options{APIKey: upstreamKey})
	g.Expect(err).NotTo(HaveOccurred())
	defer claude.Close()
	srv, err := alerts.Start(alerts.Options{})
	g.Expect(err).NotTo(HaveOccurred())
	defer srv.Close()
	gw := newStandIn(t, claude, srv.URL())

	bad := &chat.Client{GatewayURL: gw.URL, Token: "wrong", Upstream: "sandfly"}
	_, err = bad.Ask(ctx, "What security alerts do we have?")
	g.Expect(err).To(MatchError(ContainSubstring("connecting to MCP server \"sandfly\"")))

	c := &chat.Client{GatewayURL: gw.URL, Token: gatewayToken, Upstream: "sandfly", MCPProtocolVersion: "2025-11-25"}
	defer c.Close()
	g.Expect(c.Connect(ctx)).To(Succeed())
	// Without a gateway that heals, the server going away fails the call.
	g.Expect(srv.SetServing(false)).To(Succeed())
	_, err = c.Ask(ctx, "What security alerts do we have?")
	g.Expect(err).To(MatchError(ContainSubstring("calling MCP tool get_security_alerts on \"sandfly\"")))
	g.Expect(claude.Requests()).To(HaveLen(1))
	// Once it is back, the client connects again and answers.
	g.Expect(srv.SetServing(true)).To(Succeed())
	answer, err := c.Ask(ctx, "What security alerts do we have?")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(answer).To(HavePrefix("You have 5 open security alert(s)"))
}

// OnEvent delivers the gateway's healing events while Ask runs.
func TestAskDeliversHealingEvents(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	claude, err := fakeclaude.Start(fakeclaude.Options{})
	g.Expect(err).NotTo(HaveOccurred())
	defer claude.Close()
	srv, err := alerts.Start(alerts.Options{})
	g.Expect(err).NotTo(HaveOccurred())
	defer srv.Close()
	gw := newStandIn(t, claude, srv.URL())
	var query string
	gw.onEvents = func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.RawQuery
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: 41\nevent: healing_start\ndata: {\"request\":\"sandfly-mcp-server-x1\",\"service\":\"sandfly-mcp-server\",\"phase\":\"Pending\"}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
	got := make(chan chat.Event, 1)
	// Claude is asked only once the event arrived, so the test does not race.
	gw.beforeV1 = func() {
		select {
		case <-got:
		case <-ctx.Done():
		}
		got <- chat.Event{}
	}
	var seen []chat.Event
	c := &chat.Client{
		GatewayURL: gw.URL, Token: gatewayToken, Upstream: "sandfly",
		EventFilter: chat.Filter{Namespace: "cortex-system", Service: "sandfly-mcp-server"},
		OnEvent: func(e chat.Event) {
			seen = append(seen, e)
			got <- e
		},
	}
	defer c.Close()
	_, err = c.Ask(ctx, "What security alerts do we have?")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(query).To(Equal("namespace=cortex-system&service=sandfly-mcp-server"))
	g.Expect(seen).To(HaveLen(1))
	g.Expect(seen[0]).To(And(HaveField("ID", "41"), HaveField("Type", chat.EventHealingStart),
		HaveField("Healing.Request", "sandfly-mcp-server-x1"), HaveField("Healing.Phase", "Pending")))
}

// The events stream: multi-line data, comments, ids, and a reconnect that resumes
// with Last-Event-ID.
func TestEventsResumeAfterDisconnect(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var connections []http.Header
	sse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/healing/events" || r.Header.Get("Authorization") != "Bearer "+gatewayToken {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		connections = append(connections, r.Header.Clone())
		n := len(connections)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		switch n {
		case 1:
			fmt.Fprint(w, ": connected\nretry: 10\n\n")
			fmt.Fprint(w, "id: 1\nevent: healing_start\ndata: {\"request\":\"hr-1\",\ndata:  \"service\":\"sandfly-mcp-server\", \"phase\":\"Pending\"}\n\n")
			fmt.Fprint(w, ": heartbeat\n\n")
			fmt.Fprint(w, "id: 2\r\nevent: healing_progress\r\ndata: {\"request\":\"hr-1\",\"phase\":\"Diagnosing\",\"message\":\"no ready endpoints\"}\r\n\r\n")
			// The connection ends here, as when a gateway replica goes away.
		default:
			fmt.Fprint(w, "id: 3\nevent: healing_complete\ndata: {\"request\":\"hr-1\",\"phase\":\"Healed\",\"time\":\"2026-03-14T12:00:03Z\"}\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	}))
	defer sse.Close()

	c := &chat.Client{GatewayURL: sse.URL, Token: gatewayToken}
	events, err := c.Events(ctx, chat.Filter{})
	g.Expect(err).NotTo(HaveOccurred())
	var got []chat.Event
	for len(got) < 3 {
		select {
		case e, ok := <-events:
			g.Expect(ok).To(BeTrue())
			got = append(got, e)
		case <-ctx.Done():
			t.Fatal("timed out waiting for events")
		}
	}
	g.Expect(got[0]).To(And(HaveField("ID", "1"), HaveField("Type", chat.EventHealingStart),
		HaveField("Healing.Service", "sandfly-mcp-server"), HaveField("Healing.Phase", "Pending")))
	g.Expect(string(got[0].Data)).To(MatchJSON(`{"request":"hr-1","service":"sandfly-mcp-server","phase":"Pending"}`))
	g.Expect(got[1]).To(And(HaveField("ID", "2"), HaveField("Type", chat.EventHealingProgress), HaveField("Healing.Message", "no ready endpoints")))
	g.Expect(got[2]).To(And(HaveField("ID", "3"), HaveField("Type", chat.EventHealingComplete), HaveField("Healing.Phase", "Healed")))
	g.Expect(got[2].Time).To(Equal(time.Date(2026, 3, 14, 12, 0, 3, 0, time.UTC)))

	mu.Lock()
	g.Expect(connections).To(HaveLen(2))
	g.Expect(connections[0].Get("Last-Event-ID")).To(BeEmpty())
	g.Expect(connections[1].Get("Last-Event-ID")).To(Equal("2"))
	mu.Unlock()

	cancel()
	g.Eventually(events).Should(BeClosed())
}

func TestEventsRefused(t *testing.T) {
	g := NewWithT(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
	}))
	defer srv.Close()
	c := &chat.Client{GatewayURL: srv.URL}
	_, err := c.Events(context.Background(), chat.Filter{Service: "x"})
	g.Expect(err).To(MatchError(And(ContainSubstring("401"), ContainSubstring("unauthorized"))))
	g.Expect(strings.Contains(err.Error(), "Bearer")).To(BeFalse())
}
