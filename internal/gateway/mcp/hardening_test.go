package mcp

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// A failed upstream's address and the dial error stay in the log: the client gets
// the failure class. Catches: the transport error's text in the JSON-RPC error.
func TestErrorsDoNotDiscloseUpstreamAddresses(t *testing.T) {
	closed := reserveAddr(t)
	proxy := startProxy(t, Options{Upstreams: []Upstream{{Name: "tools", URL: "http://" + closed + "/mcp", Namespace: "default", Service: "tools"}}})
	for _, accept := range []string{"application/json", "application/json, text/event-stream"} {
		resp := rawPost(t, proxy.URL+"/mcp/tools", map[string]string{"Accept": accept},
			`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"count","arguments":{"n":1}}}`)
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		_, port, _ := strings.Cut(closed, ":")
		for _, leak := range []string{closed, ":" + port, "dial tcp", "127.0.0.1", "http://"} {
			if strings.Contains(string(b), leak) {
				t.Fatalf("client saw %q: %s", leak, b)
			}
		}
		if !strings.Contains(string(b), "ConnectionRefused") {
			t.Fatalf("client did not get the failure class: %s", b)
		}
	}
}

// The session map is bounded by count (least recently used forgotten first) and by
// idle time. Catches: sessions removed only on DELETE.
func TestSessionStoreIsBounded(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Now())
	up := newUpstream(t, false)
	p, err := NewProxy(Options{
		Upstreams:   []Upstream{{Name: "tools", URL: up.url(), Namespace: "default", Service: "tools"}},
		MaxSessions: 3, SessionIdleTimeout: time.Minute, Clock: clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp/{name}", p)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	srv := ts.URL
	const version = "2025-11-25"
	initialize := func(i int) string {
		resp := rawPost(t, srv+"/mcp/tools", map[string]string{"Mcp-Protocol-Version": version},
			fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"%s","capabilities":{},"clientInfo":{"name":"c%d","version":"1"}}}`, version, i))
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		sid := resp.Header.Get("Mcp-Session-Id")
		if resp.StatusCode != 200 || sid == "" {
			t.Fatalf("initialize %d: %d %q", i, resp.StatusCode, sid)
		}
		return sid
	}
	var ids []string
	for i := range 50 {
		ids = append(ids, initialize(i))
		clk.SetTime(clk.Now().Add(time.Second))
		if p.upstreams["tools"].session(ids[0]) == nil && i < 3 {
			t.Fatalf("session %d forgotten too early", i)
		}
	}
	if n := p.sessions.len(); n != 3 {
		t.Fatalf("%d sessions remembered, want the cap of 3", n)
	}
	// ids[0] was used at every step, so it is among the three kept.
	if p.upstreams["tools"].session(ids[0]) == nil || p.upstreams["tools"].session(ids[1]) != nil {
		t.Fatal("eviction is not least-recently-used")
	}
	clk.SetTime(clk.Now().Add(2 * time.Minute))
	if p.upstreams["tools"].session(ids[49]) != nil || p.sessions.len() != 0 {
		t.Fatalf("idle sessions kept: %d", p.sessions.len())
	}
}

// A call whose upstream answers 404 for its session, with a cluster reachable but
// no controller running, is answered at once by re-creating the session, and the
// incident is still reported. Catches: holding the call until the healing ends.
func TestLostSessionWithNothingHealingIsAnsweredAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	healer := startHealer(t, ctx, ns) // no controller: nothing will ever heal
	up := newUpstream(t, false)
	proxy := startProxy(t, Options{
		Upstreams: []Upstream{{Name: "tools", URL: up.url(), Namespace: ns, Service: "tools"}},
		Healer:    healer,
	})
	url := proxy.URL + "/mcp/tools"
	const version = "2025-11-25"
	init := rawPost(t, url, map[string]string{"Mcp-Protocol-Version": version},
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+version+`","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`)
	_, _ = io.Copy(io.Discard, init.Body)
	_ = init.Body.Close()
	sid := init.Header.Get("Mcp-Session-Id")
	hdr := map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": version}
	_ = rawPost(t, url, hdr, `{"jsonrpc":"2.0","method":"notifications/initialized"}`).Body.Close()

	up.stop()
	up.start() // the upstream restarted and forgot the session: it answers 404

	start := time.Now()
	done := make(chan string, 1)
	go func() {
		resp := rawPost(t, url, hdr, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"count","arguments":{"n":2}}}`)
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		done <- string(b)
	}()
	select {
	case b := <-done:
		if !strings.Contains(b, `"result"`) {
			t.Fatalf("call on the lost session: %s", b)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the call on a lost session was held: no answer within 30s")
	}
	t.Logf("answered in %s", time.Since(start))
	// The incident is reported in the background.
	waitFor(t, func() bool { return len(requests(t, ns)) == 1 })
}
