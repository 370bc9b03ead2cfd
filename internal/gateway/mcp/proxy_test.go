package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/selfheal-dev/selfheal/internal/sse"
)

// upstreamServer is a real MCP server (the official SDK) on a fixed loopback address
// that a test can stop and start again, losing its sessions as a restarted pod would.
type upstreamServer struct {
	t         *testing.T
	stateless bool
	addr      string

	mu      sync.Mutex
	srv     *http.Server
	headers []http.Header // request headers seen, in order
	inits   atomic.Int32  // initialize requests seen
	calls   atomic.Int32  // tools/call handled
}

type countIn struct {
	N int `json:"n"`
}

type countOut struct {
	Sum int `json:"sum"`
}

func newUpstream(t *testing.T, stateless bool) *upstreamServer {
	t.Helper()
	u := &upstreamServer{t: t, stateless: stateless, addr: "127.0.0.1:0"}
	u.start()
	t.Cleanup(u.stop)
	return u
}

// reserveAddr returns a loopback address nothing listens on (a "closed port").
// reserveAddr picks an address for an upstream the test starts later (until then,
// connections to it are refused). The port is free when picked but not held, so it
// is picked on a random loopback address (all of 127.0.0.0/8 is loopback on Linux):
// the other tests and processes of a parallel run listen on 127.0.0.1, and one of them
// taking the port (answering 404 for the upstream) made this flaky.
func reserveAddr(t *testing.T) string {
	t.Helper()
	host := fmt.Sprintf("127.%d.%d.%d", 1+mrand.IntN(254), mrand.IntN(256), 1+mrand.IntN(254))
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func newMCPServer(u *upstreamServer) *sdk.Server {
	server := sdk.NewServer(&sdk.Implementation{Name: "upstream", Version: "v1.0.0"}, nil)
	sdk.AddTool(server, &sdk.Tool{Name: "count", Description: "counts to n, reporting progress"},
		func(ctx context.Context, req *sdk.CallToolRequest, in countIn) (*sdk.CallToolResult, countOut, error) {
			u.calls.Add(1)
			sum := 0
			for i := 1; i <= in.N; i++ {
				sum += i
				if tok := req.Params.GetProgressToken(); tok != nil {
					if err := req.Session.NotifyProgress(ctx, &sdk.ProgressNotificationParams{
						ProgressToken: tok, Progress: float64(i), Total: float64(in.N), Message: fmt.Sprintf("step %d", i),
					}); err != nil {
						return nil, countOut{}, err
					}
				}
			}
			return nil, countOut{Sum: sum}, nil
		})
	return server
}

func (u *upstreamServer) start() {
	u.t.Helper()
	ln, err := net.Listen("tcp", u.addr)
	if err != nil {
		u.t.Fatalf("listening on %s: %v", u.addr, err)
	}
	u.addr = ln.Addr().String()
	server := newMCPServer(u)
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return server },
		&sdk.StreamableHTTPOptions{Stateless: u.stateless})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.headers = append(u.headers, r.Header.Clone())
		u.mu.Unlock()
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			if bytes.Contains(body, []byte(`"method":"initialize"`)) {
				u.inits.Add(1)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		h.ServeHTTP(w, r)
	})}
	u.mu.Lock()
	u.srv = srv
	u.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (u *upstreamServer) stop() {
	u.mu.Lock()
	srv := u.srv
	u.srv = nil
	u.mu.Unlock()
	if srv != nil {
		_ = srv.Close() // drops every connection, like a killed pod
	}
}

func (u *upstreamServer) url() string { return "http://" + u.addr + "/mcp" }

func (u *upstreamServer) seenHeaders() []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]http.Header(nil), u.headers...)
}

// startProxy serves the proxy at /mcp/{name} on loopback.
func startProxy(t *testing.T, opts Options) *httptest.Server {
	t.Helper()
	p, err := NewProxy(opts)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp/{name}", p)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

type clientLog struct {
	mu       sync.Mutex
	progress []string
	messages []string
}

func (l *clientLog) progressMessages() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.progress...)
}

func (l *clientLog) logMessages() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.messages...)
}

func connectSDK(t *testing.T, ctx context.Context, endpoint, version string) (*sdk.ClientSession, *clientLog) {
	t.Helper()
	log := &clientLog{}
	client := sdk.NewClient(&sdk.Implementation{Name: "test-client", Version: "v1"}, &sdk.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
			log.mu.Lock()
			log.progress = append(log.progress, req.Params.Message)
			log.mu.Unlock()
		},
		LoggingMessageHandler: func(_ context.Context, req *sdk.LoggingMessageRequest) { //nolint:staticcheck // SA1019: the gateway sends healing log messages to calls without a progress token; the test checks them
			b, _ := json.Marshal(req.Params.Data)
			log.mu.Lock()
			log.messages = append(log.messages, string(b))
			log.mu.Unlock()
		},
	})
	cs, err := client.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: endpoint, MaxRetries: 10},
		&sdk.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connecting through the proxy: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs, log
}

func callCount(t *testing.T, ctx context.Context, cs *sdk.ClientSession, n int, token any) int {
	t.Helper()
	params := &sdk.CallToolParams{Name: "count", Arguments: map[string]any{"n": n}}
	if token != nil {
		params.SetProgressToken(token)
	}
	res, err := cs.CallTool(ctx, params)
	if err != nil {
		t.Fatalf("tools/call through the proxy: %v", err)
	}
	if res.IsError {
		t.Fatalf("tools/call returned a tool error: %+v", res.Content)
	}
	var out countOut
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("decoding structured content %s: %v", b, err)
	}
	return out.Sum
}

func TestSDKClientAndServerThroughProxy(t *testing.T) {
	for _, tc := range []struct {
		name      string
		version   string
		stateless bool
	}{
		{name: "2025-11-25 sessions", version: "2025-11-25"},
		{name: "2026-07-28 stateless", version: "2026-07-28", stateless: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			up := newUpstream(t, tc.stateless)
			proxy := startProxy(t, Options{Upstreams: []Upstream{{Name: "tools", URL: up.url(), Namespace: "default", Service: "tools"}}})
			cs, log := connectSDK(t, ctx, proxy.URL+"/mcp/tools", tc.version)

			if got := cs.InitializeResult().ProtocolVersion; got != tc.version {
				t.Fatalf("negotiated protocol version %q through the proxy, want %q", got, tc.version)
			}
			if tc.stateless && cs.ID() != "" {
				t.Fatalf("stateless revision got a session id %q", cs.ID())
			}
			if !tc.stateless && cs.ID() == "" {
				t.Fatal("session revision got no Mcp-Session-Id through the proxy")
			}
			tools, err := cs.ListTools(ctx, nil)
			if err != nil {
				t.Fatalf("tools/list: %v", err)
			}
			if len(tools.Tools) != 1 || tools.Tools[0].Name != "count" {
				t.Fatalf("tools/list = %+v, want the count tool", tools.Tools)
			}
			if sum := callCount(t, ctx, cs, 4, "tok-1"); sum != 10 {
				t.Fatalf("count(4) = %d, want 10", sum)
			}
			// Notification handlers run asynchronously to the call's return.
			waitFor(t, func() bool { return len(log.progressMessages()) == 4 })
			if got := log.progressMessages(); strings.Join(got, ",") != "step 1,step 2,step 3,step 4" {
				t.Fatalf("progress relayed to the client = %q, want steps 1..4 in order", got)
			}
			// The wire: the revision's headers reached the upstream unchanged.
			var sawVersion, sawSession bool
			for _, h := range up.seenHeaders() {
				if h.Get("Mcp-Protocol-Version") == tc.version {
					sawVersion = true
				}
				if h.Get("Mcp-Session-Id") != "" {
					sawSession = true
				}
				if h.Get("Authorization") != "" {
					t.Fatal("the proxy forwarded an Authorization header upstream")
				}
			}
			if !sawVersion {
				t.Fatalf("upstream never saw Mcp-Protocol-Version %s", tc.version)
			}
			if sawSession == tc.stateless {
				t.Fatalf("upstream saw Mcp-Session-Id = %v, want %v", sawSession, !tc.stateless)
			}
		})
	}
}

func TestSessionLostUpstreamIsReinitializedAndClientKeepsItsSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	up := newUpstream(t, false)
	proxy := startProxy(t, Options{
		Upstreams:     []Upstream{{Name: "tools", URL: up.url(), Namespace: "default", Service: "tools"}},
		RetryInterval: 20 * time.Millisecond,
	})
	cs, _ := connectSDK(t, ctx, proxy.URL+"/mcp/tools", "2025-11-25")
	sessionBefore := cs.ID()
	if sum := callCount(t, ctx, cs, 3, nil); sum != 6 {
		t.Fatalf("count(3) = %d", sum)
	}

	// Restart the upstream: its sessions are gone.
	up.stop()
	up.start()

	for i := range 3 {
		if sum := callCount(t, ctx, cs, 5, fmt.Sprintf("tok-%d", i)); sum != 15 {
			t.Fatalf("count(5) after the upstream restart = %d, want 15", sum)
		}
	}
	if cs.ID() != sessionBefore {
		t.Fatalf("client session changed from %q to %q", sessionBefore, cs.ID())
	}
	if got := up.inits.Load(); got != 2 {
		t.Fatalf("upstream saw %d initialize requests, want 2 (the client's and the proxy's re-initialize)", got)
	}
	// The session must still be fully usable, including listing.
	if _, err := cs.ListTools(ctx, nil); err != nil {
		t.Fatalf("tools/list after recovery: %v", err)
	}
}

func rawPost(t *testing.T, url string, hdr map[string]string, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func decodeError(t *testing.T, resp *http.Response) (code int, msg string) {
	t.Helper()
	defer resp.Body.Close()
	var m struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("error body %q is not JSON-RPC: %v", b, err)
	}
	return m.Error.Code, m.Error.Message
}

func TestRequestValidation(t *testing.T) {
	up := newUpstream(t, true)
	proxy := startProxy(t, Options{
		Upstreams:      []Upstream{{Name: "tools", URL: up.url(), Namespace: "default", Service: "tools"}},
		AllowedOrigins: []string{"https://chat.example.com"},
		MaxBodyBytes:   1024,
	})
	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`

	resp := rawPost(t, proxy.URL+"/mcp/nope", nil, ping)
	if code, msg := decodeError(t, resp); resp.StatusCode != http.StatusNotFound || code != codeInvalidRequest || !strings.Contains(msg, `unknown MCP upstream "nope"`) {
		t.Fatalf("unknown upstream: %d %d %q", resp.StatusCode, code, msg)
	}
	resp = rawPost(t, proxy.URL+"/mcp/tools", nil, `{"jsonrpc":"2.0",`)
	if code, _ := decodeError(t, resp); resp.StatusCode != http.StatusBadRequest || code != codeParseError {
		t.Fatalf("malformed JSON: %d %d", resp.StatusCode, code)
	}
	resp = rawPost(t, proxy.URL+"/mcp/tools", nil, `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"`+strings.Repeat("x", 2048)+`"}}`)
	if code, _ := decodeError(t, resp); resp.StatusCode != http.StatusRequestEntityTooLarge || code != codeInvalidRequest {
		t.Fatalf("oversized body: %d %d", resp.StatusCode, code)
	}
	resp = rawPost(t, proxy.URL+"/mcp/tools", map[string]string{"Origin": "https://evil.example.com"}, ping)
	if code, msg := decodeError(t, resp); resp.StatusCode != http.StatusForbidden || !strings.Contains(msg, "evil.example.com") {
		t.Fatalf("foreign origin: %d %d %q", resp.StatusCode, code, msg)
	}
	before := len(up.seenHeaders())
	resp = rawPost(t, proxy.URL+"/mcp/tools", map[string]string{"Origin": "https://chat.example.com", "Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"},
		`{"jsonrpc":"2.0","id":7,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(up.seenHeaders()) != before+1 {
		t.Fatalf("allowed origin: %d %s (upstream requests %d -> %d)", resp.StatusCode, body, before, len(up.seenHeaders()))
	}
}

func TestFailingUpstreamWithoutClusterSaysHealingUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	closed := reserveAddr(t)
	proxy := startProxy(t, Options{Upstreams: []Upstream{{Name: "tools", URL: "http://" + closed + "/mcp", Namespace: "default", Service: "tools"}}})

	// The SDK client's handshake is held, then answered with the error.
	client := sdk.NewClient(&sdk.Implementation{Name: "test-client", Version: "v1"}, nil)
	_, err := client.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: proxy.URL + "/mcp/tools"}, &sdk.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err == nil || !strings.Contains(err.Error(), "healing is unavailable") {
		t.Fatalf("connect to a dead upstream without a cluster: err = %v, want healing unavailable", err)
	}

	// Raw JSON-only client: a JSON-RPC error with the same id.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, proxy.URL+"/mcp/tools",
		strings.NewReader(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"count","arguments":{"n":1}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		ID    int `json:"id"`
		Error struct {
			Code    int            `json:"code"`
			Message string         `json:"message"`
			Data    map[string]any `json:"data"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if m.ID != 42 || m.Error.Code != codeHealingUnavailable || m.Error.Data["failureClass"] != "ConnectionRefused" {
		t.Fatalf("got %+v, want a healing-unavailable error for id 42 with failure class ConnectionRefused", m)
	}
}

// waitFor polls cond until it holds; it fails the test after 90s (generous: the
// suite runs beside other builds, at load averages of 8 and more).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 90s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The proxy forwards no hop-by-hop header, in either direction, including those a
// Connection header names. Catches: a second, fixed list of hop headers that ignores
// Connection (the MCP proxy's own list did).
func TestHopByHopHeadersAreNotForwarded(t *testing.T) {
	seen := make(chan http.Header, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("Connection", "X-Up-Private")
		w.Header().Set("X-Up-Private", "upstream's own")
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	}))
	defer up.Close()
	proxy := startProxy(t, Options{Upstreams: []Upstream{{Name: "tools", URL: up.URL, Namespace: "ns", Service: "tools"}}})
	req, _ := http.NewRequest(http.MethodPost, proxy.URL+"/mcp/tools", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Connection", "X-Hop-Private")
	req.Header.Set("X-Hop-Private", "for the gateway only")
	req.Header.Set("Proxy-Authorization", "Basic c2VjcmV0")
	req.Header.Set("X-End-To-End", "kept")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	got := <-seen
	if got.Get("X-Hop-Private") != "" || got.Get("Proxy-Authorization") != "" || got.Get("X-End-To-End") != "kept" {
		t.Fatalf("upstream saw %v", got)
	}
	if resp.Header.Get("X-Up-Private") != "" {
		t.Fatalf("client saw the upstream's connection-scoped header: %v", resp.Header)
	}
}

// An upstream that answers a call with an SSE stream, sends one event and then waits
// for the client to have it: a proxy that buffers the stream deadlocks here.
// Catches: relaying the upstream's stream in blocks or only at its end.
func TestMCPStreamIsNotBuffered(t *testing.T) {
	clientHasIt := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := sse.Start(w)
		_ = sw.Event(sse.Event{Type: "message", Data: `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1,"message":"working"}}`})
		_ = sw.Flush()
		select {
		case <-clientHasIt:
		case <-r.Context().Done():
			return
		}
		_ = sw.Event(sse.Event{Type: "message", Data: `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`})
		_ = sw.Flush()
	}))
	defer up.Close()
	proxy := startProxy(t, Options{Upstreams: []Upstream{{Name: "tools", URL: up.URL, Namespace: "ns", Service: "tools"}}})
	req, _ := http.NewRequest(http.MethodPost, proxy.URL+"/mcp/tools",
		strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","_meta":{"progressToken":"p"}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed by the defer below
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan sse.Event)
	go func() {
		defer close(events)
		r := sse.NewReader(resp.Body)
		for {
			ev, err := r.Next()
			if err != nil {
				return
			}
			events <- ev
		}
	}()
	for _, want := range []string{"notifications/progress", `"result"`} {
		select {
		case ev, ok := <-events:
			if !ok || !strings.Contains(ev.Data, want) {
				t.Fatalf("got %q (open %v), want the event with %s", ev.Data, ok, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no event with %s within 20s while the upstream waited for the client: the proxy buffers the stream", want)
		}
		if want == "notifications/progress" {
			close(clientHasIt)
		}
	}
}
