package gateway_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/selfheal-dev/selfheal/internal/gateway"
)

// rawExchange sends head (a request line and headers, without the blank line)
// and then body bytes, and reads the response status line and whether the
// server then closed the connection, all within deadline.
func rawExchange(t *testing.T, addr, head, body string, deadline time.Duration) (status string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(deadline))
	if _, err := io.WriteString(c, head+"\r\n\r\n"+body); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", false
	}
	// Drain the response; the server must then close the connection (EOF), not
	// wait for the rest of the body.
	_, err = io.Copy(io.Discard, br)
	return strings.TrimSpace(line), err == nil
}

func addrOf(g *gw) string { return strings.TrimPrefix(g.url, "http://") }

// A client dripping its body must get its refusal at once and see the
// connection closed, with the rest of the body never read. Catches: a refusal
// without Connection: close (net/http then drains up to 256 KiB first) and the
// 404/405/401 paths forgetting limits.Refuse.
func TestRefusalsNeverWaitForTheBody(t *testing.T) {
	up := newFakeAnthropic(t)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "gateway route") })
	g := startGateway(t, up.srv.URL, gwSetup{opts: []gateway.Option{gateway.Mount("POST /v1/healing-requests", ok)}})
	const clients = 200
	for _, tc := range []struct{ name, head, want string }{
		{"no token", "POST /v1/messages HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000", "401"},
		{"wrong token, chunked", "POST /v1/messages HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer nope\r\nTransfer-Encoding: chunked", "401"},
		{"wrong method", "PUT /v1/healing-requests HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000", "405"},
		{"no route", "POST /elsewhere HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000", "404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var wg sync.WaitGroup
			var bad atomic.Int32
			var first atomic.Value
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					body := "x" // one byte of a body that never completes
					if strings.Contains(tc.head, "chunked") {
						body = "10\r\nx"
					}
					status, closed := rawExchange(t, addrOf(g), tc.head, body, 15*time.Second)
					if !strings.Contains(status, " "+tc.want+" ") || !closed {
						bad.Add(1)
						first.CompareAndSwap(nil, fmt.Sprintf("status %q closed %v", status, closed))
					}
				}()
			}
			wg.Wait()
			if n := bad.Load(); n > 0 {
				t.Fatalf("%d of %d dripping clients were not refused and closed within 15s (first: %v)", n, clients, first.Load())
			}
		})
	}
	if n := len(up.requests()); n != 0 {
		t.Fatalf("upstream saw %d requests", n)
	}
}

// An authenticated client that stops sending its body is cut off at
// limits.bodyReadTimeout. Catches: no per-request body deadline.
func TestAuthenticatedSlowBodyHitsTheBodyDeadline(t *testing.T) {
	up := newFakeAnthropic(t)
	g := startGateway(t, up.srv.URL, gwSetup{yaml: `
anthropic:
  baseURL: UPSTREAM
  apiKey: {env: TEST_ANTHROPIC_KEY}
auth: {tokensFile: TOKENS}
limits: {bodyReadTimeout: 500ms}
`})
	start := time.Now()
	status, closed := rawExchange(t, addrOf(g),
		"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nX-Api-Key: "+clientToken+"\r\nContent-Length: 1000", `{"model"`, 20*time.Second)
	if !strings.Contains(status, " 400 ") || !closed {
		t.Fatalf("stalled body: status %q closed %v after %s, want 400 and a closed connection", status, closed, time.Since(start))
	}
	if n := len(up.requests()); n != 0 {
		t.Fatalf("a partial body was forwarded (%d requests)", n)
	}
	// A body that arrives in time is still served, and its response is not cut by
	// the (lifted) deadline.
	if status, _, b := do(t, http.MethodPost, g.url+"/v1/messages", map[string]string{"X-Api-Key": clientToken}, `{"model":"m"}`); status != 200 {
		t.Fatalf("normal call: %d %s", status, b)
	}
}

// zeros is an endless body that costs the client no memory.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.n)
	clear(p[:n])
	z.n -= n
	return int(n), nil
}

// Concurrent large bodies are admitted only while the budget of buffered bytes
// lasts; the rest are answered 503 with Retry-After at once, and the heap stays
// near the budget. Catches: bodies buffered with no global bound.
func TestBufferedBytesBudget(t *testing.T) {
	const body = 4 << 20
	release := make(chan struct{})
	var arrived atomic.Int32
	// This upstream discards bodies: only the gateway's buffering shows in the heap.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		arrived.Add(1)
		<-release
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, messageJSON)
	}))
	t.Cleanup(up.Close)
	g := startGateway(t, up.URL, gwSetup{yaml: `
anthropic:
  baseURL: UPSTREAM
  apiKey: {env: TEST_ANTHROPIC_KEY}
  maxBodyBytes: 4194304
auth: {tokensFile: TOKENS}
limits: {maxBufferedBytes: 8388608}
`})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()

	const clients = 12
	codes := make(chan *http.Response, clients)
	for range clients {
		go func() {
			// Not /v1/messages: that route checks the body is JSON.
			req, _ := http.NewRequest(http.MethodPost, g.url+"/v1/files", &zeros{n: body})
			req.ContentLength = body
			req.Header.Set("X-Api-Key", clientToken)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				// A refused client may see its upload cut when the server closes.
				codes <- nil
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			codes <- res
		}()
	}
	refused := 0
	for range clients - 2 {
		res := <-codes
		if res == nil || res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
			t.Fatalf("over the budget: got %v, want 503 with Retry-After", res)
		}
		refused++
	}
	waitUntil(t, func() bool { return arrived.Load() == 2 })
	close(release)
	for range 2 {
		if res := <-codes; res == nil || res.StatusCode != 200 {
			t.Fatalf("within the budget: got %v, want 200", res)
		}
	}
	close(stop)
	<-sampled
	if grew := int64(peak.Load()) - int64(base); grew > 28<<20 {
		t.Fatalf("heap grew by %d MiB for a budget of 8 MiB", grew>>20)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 90s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Wrong methods on gateway routes, paths under the gateway's own prefix and
// malformed paths are answered by the gateway and never reach Anthropic with the
// organisation's key. Catches: the /v1/ catch-all taking them.
func TestOnlyWellFormedAPIPathsAreForwarded(t *testing.T) {
	up := newFakeAnthropic(t)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "gateway route") })
	g := startGateway(t, up.srv.URL, gwSetup{opts: []gateway.Option{
		gateway.Mount("GET /v1/healing/events", ok),
		gateway.Mount("POST /v1/healing-requests", ok),
	}})
	auth := "\r\nHost: gw\r\nX-Api-Key: " + clientToken + "\r\nContent-Length: 2"
	for _, tc := range []struct{ line, want string }{
		{"POST /v1/healing/events HTTP/1.1", "405"},
		{"GET /v1/healing-requests HTTP/1.1", "405"},
		{"PUT /v1/healing-requests HTTP/1.1", "405"},
		{"GET /v1/healing/other HTTP/1.1", "404"},
		{"GET /v1/healing-requests/x HTTP/1.1", "404"},
		{"POST /v1/%2e%2e/admin HTTP/1.1", "404"},
		{"POST /v1/%2E%2E/admin HTTP/1.1", "404"},
		{"POST /v1/messages/%2e%2e HTTP/1.1", "404"},
		{"POST /v1/messages%2fcount_tokens HTTP/1.1", "404"},
		{"POST /v1/.%2e/admin HTTP/1.1", "404"},
		{"POST /v1//messages HTTP/1.1", "307"}, // net/http's own redirect to the clean path
		{"POST /v1/messages/ HTTP/1.1", "404"},
		{"POST /v1/mess%61ges HTTP/1.1", "404"},
		{"POST /v1/ HTTP/1.1", "404"},
	} {
		status, _ := rawExchange(t, addrOf(g), tc.line+auth, "{}", 10*time.Second)
		if !strings.Contains(status, " "+tc.want+" ") {
			t.Errorf("%s: %q, want %s", tc.line, status, tc.want)
		}
	}
	if n := len(up.requests()); n != 0 {
		t.Fatalf("%d requests reached Anthropic", n)
	}
	for _, line := range []string{"POST /v1/messages HTTP/1.1", "POST /v1/messages/count_tokens HTTP/1.1", "GET /v1/models/claude-x_1.5 HTTP/1.1"} {
		if status, _ := rawExchange(t, addrOf(g), line+auth+"\r\nConnection: close", "{}", 10*time.Second); !strings.Contains(status, " 200 ") {
			t.Errorf("%s: %q, want it forwarded", line, status)
		}
	}
	if status, h, b := do(t, http.MethodPost, g.url+"/v1/healing/events", nil, ""); status != 405 || h.Get("Allow") != "GET, HEAD" {
		t.Errorf("405 without Allow: %d %v %s", status, h, b)
	}
}

// A browser page from an origin not in allowedOrigins cannot use /v1/* with a
// token it got hold of. Catches: /v1/* ignoring Origin.
func TestAPIRefusesUnknownOrigins(t *testing.T) {
	up := newFakeAnthropic(t)
	g := startGateway(t, up.srv.URL, gwSetup{yaml: `
anthropic:
  baseURL: UPSTREAM
  apiKey: {env: TEST_ANTHROPIC_KEY}
auth: {tokensFile: TOKENS}
allowedOrigins: [https://chat.example.com]
`})
	hdr := map[string]string{"X-Api-Key": clientToken, "Origin": "https://evil.example"}
	if status, _, b := do(t, http.MethodPost, g.url+"/v1/messages", hdr, `{}`); status != 403 || !strings.Contains(b, "evil.example") {
		t.Fatalf("unknown origin: %d %s", status, b)
	}
	if n := len(up.requests()); n != 0 {
		t.Fatalf("%d requests reached Anthropic", n)
	}
	hdr["Origin"] = "https://chat.example.com"
	if status, _, b := do(t, http.MethodPost, g.url+"/v1/messages", hdr, `{}`); status != 200 {
		t.Fatalf("allowed origin: %d %s", status, b)
	}
}

// mode: none is refused off loopback unless allowUnauthenticated is set, and
// warns at every start. Catches: a silent start on all interfaces.
func TestAuthNoneFailsClosedOffLoopback(t *testing.T) {
	cfgFor := func(extra string) *gateway.Config {
		cfg, err := gateway.ParseConfig([]byte("anthropic: {apiKey: {env: K}}\nauth: {mode: none"+extra+"}\n"), func(string) string { return canaryKey })
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	for _, addr := range []string{":8443", "0.0.0.0:8443", "[::]:8443", "10.1.2.3:8443"} {
		_, err := gateway.New(cfgFor(""), gateway.WithBindAddress(addr), gateway.WithLogger(logr.Discard()))
		if err == nil || !strings.Contains(err.Error(), "auth.mode: none") || !strings.Contains(err.Error(), "allowUnauthenticated") {
			t.Errorf("mode none on %s: err = %v, want a refusal naming auth.mode and allowUnauthenticated", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:8443", "localhost:8443", "[::1]:8443"} {
		if _, err := gateway.New(cfgFor(""), gateway.WithBindAddress(addr), gateway.WithLogger(logr.Discard())); err != nil {
			t.Errorf("mode none on loopback %s: %v", addr, err)
		}
	}
	if _, err := gateway.New(cfgFor(", allowUnauthenticated: true"), gateway.WithBindAddress(":8443"), gateway.WithLogger(logr.Discard())); err != nil {
		t.Errorf("mode none with allowUnauthenticated: %v", err)
	}
	if _, err := gateway.ParseConfig([]byte("anthropic: {apiKey: {env: K}}\nauth: {tokensFile: /x, allowUnauthenticated: true}\n"), func(string) string { return canaryKey }); err == nil ||
		!strings.Contains(err.Error(), "auth.allowUnauthenticated") {
		t.Errorf("allowUnauthenticated with tokens: err = %v", err)
	}
	up := newFakeAnthropic(t)
	g := startGateway(t, up.srv.URL, gwSetup{yaml: "anthropic: {baseURL: UPSTREAM, apiKey: {env: TEST_ANTHROPIC_KEY}}\nauth: {mode: none}\n"})
	waitUntil(t, func() bool { return strings.Contains(g.logs.String(), "client authentication is off") })
}

func TestMetricLabelsComeOnlyFromConfig(t *testing.T) {
	cfg, err := gateway.ParseConfig([]byte(validConfig), env)
	if err != nil {
		t.Fatal(err)
	}
	rec := gateway.NewRecorder(cfg)
	label := "client-chosen-" + fmt.Sprint(time.Now().UnixNano())
	rec.HealingTriggered(label, true)
	rec.HealingTriggered("tools", true)
	rec.ObserveAttempt(label, "200", time.Millisecond)
	if n := countLabel(t, label); n != 0 {
		t.Fatalf("a client-chosen upstream became a label value (%d series)", n)
	}
	if countLabel(t, "tools") == 0 || countLabel(t, gateway.OtherUpstream) == 0 {
		t.Fatal("configured upstream or other label missing")
	}
}

func countLabel(t *testing.T, value string) int {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "upstream" && lp.GetValue() == value {
					n++
				}
			}
		}
	}
	return n
}
