package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/selfheal-dev/selfheal/internal/gateway"
)

func do(t *testing.T, method, url string, headers map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(b)
}

type anthropicErr struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

func TestAuth(t *testing.T) {
	up := newFakeAnthropic(t)
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Reports which credential headers reached the mounted handler.
		_, _ = fmt.Fprintf(w, "auth=%q key=%q token=%q", r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"), r.Header.Get("X-Selfheal-Token"))
	})
	g := startGateway(t, up.srv.URL, gwSetup{opts: []gateway.Option{gateway.Mount("/mcp/{name}", echo)}})
	body := `{"model":"m","max_tokens":1,"messages":[]}`

	t.Run("SDK without a token is refused", func(t *testing.T) {
		c := sdk.NewClient(option.WithBaseURL(g.url), option.WithAPIKey("not-a-token"), option.WithMaxRetries(0))
		_, err := c.Messages.New(context.Background(), newParams())
		var apiErr *sdk.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Type() != "authentication_error" {
			t.Fatalf("want 401 authentication_error, got %v", err)
		}
	})
	for _, tc := range []struct {
		name    string
		path    string
		headers map[string]string
		status  int
	}{
		{"no credentials", "/v1/messages", nil, 401},
		{"wrong bearer", "/v1/messages", map[string]string{"Authorization": "Bearer nope"}, 401},
		{"bearer (SDK v2)", "/v1/messages", map[string]string{"Authorization": "Bearer " + clientToken}, 200},
		{"x-api-key (SDK v1 and others)", "/v1/messages", map[string]string{"X-Api-Key": clientToken}, 200},
		{"x-selfheal-token", "/v1/messages", map[string]string{"X-Selfheal-Token": clientToken}, 200},
		{"mounted handler needs a token", "/mcp/tools", nil, 401},
		{"mounted handler with a token", "/mcp/tools", map[string]string{"Authorization": "Bearer " + clientToken}, 200},
		{"healthz is public", "/healthz", nil, 200},
		{"readyz is public", "/readyz", nil, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, b := do(t, http.MethodPost, g.url+tc.path, tc.headers, body)
			if strings.HasSuffix(tc.path, "z") {
				status, _, b = do(t, http.MethodGet, g.url+tc.path, tc.headers, "")
			}
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, b)
			}
			if status == 401 {
				var e anthropicErr
				if err := json.Unmarshal([]byte(b), &e); err != nil || e.Type != "error" || e.Error.Type != "authentication_error" || e.Error.Message == "" {
					t.Fatalf("401 body not in the Anthropic error shape: %s", b)
				}
			}
			if strings.HasPrefix(tc.path, "/mcp/") && status == 200 && b != `auth="" key="" token=""` {
				t.Fatalf("gateway token reached the mounted handler: %s", b)
			}
		})
	}
	for _, r := range up.requests() {
		if r.header.Get("X-Api-Key") != canaryKey || r.header.Get("Authorization") != "" || r.header.Get("X-Selfheal-Token") != "" {
			t.Fatalf("upstream got client credentials instead of the injected key")
		}
	}
}

func TestAuthPassThrough(t *testing.T) {
	up := newFakeAnthropic(t)
	g := startGateway(t, up.srv.URL, gwSetup{yaml: `
anthropic:
  baseURL: UPSTREAM
  apiKey: {passThrough: true}
auth: {tokensFile: TOKENS}
`})
	// The client's bearer is its own Anthropic key: not a gateway token.
	c := sdk.NewClient(option.WithBaseURL(g.url), option.WithAPIKey(clientToken), option.WithMaxRetries(0))
	_, err := c.Messages.New(context.Background(), newParams())
	var apiErr *sdk.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || !strings.Contains(apiErr.Message, "X-Selfheal-Token") {
		t.Fatalf("want 401 naming the token header, got %v", err)
	}

	c = sdk.NewClient(option.WithBaseURL(g.url), option.WithAPIKey("sk-ant-client-own"), option.WithMaxRetries(0),
		option.WithHeader("x-selfheal-token", clientToken))
	if _, err := c.Messages.New(context.Background(), newParams()); err != nil {
		t.Fatalf("pass-through call: %v", err)
	}
	reqs := up.requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(reqs))
	}
	if got := reqs[0].header.Get("Authorization"); got != "Bearer sk-ant-client-own" {
		t.Fatalf("client key not passed through, Authorization = %q", got)
	}
	if reqs[0].header.Get("X-Selfheal-Token") != "" {
		t.Fatal("gateway token was forwarded to Anthropic")
	}
}

func TestAuthNoneAdmitsAll(t *testing.T) {
	up := newFakeAnthropic(t)
	g := startGateway(t, up.srv.URL, gwSetup{yaml: `
anthropic:
  baseURL: UPSTREAM
  apiKey: {env: TEST_ANTHROPIC_KEY}
auth: {mode: none}
`})
	if status, _, b := do(t, http.MethodPost, g.url+"/v1/messages", nil, `{"model":"m"}`); status != 200 {
		t.Fatalf("status %d: %s", status, b)
	}
}

func TestTokensReloadOnChange(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens")
	if err := os.WriteFile(path, []byte("old-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := gateway.NewAuthenticator(path, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = a.Watch(ctx) }()
	h := a.Middleware(false, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	admitted := func(tok string) bool {
		req, _ := http.NewRequest(http.MethodGet, "/mcp/x", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := &statusRecorder{header: http.Header{}, code: 200}
		h.ServeHTTP(rec, req)
		return rec.code == 200
	}
	if !admitted("old-token") || admitted("new-token") {
		t.Fatal("initial tokens wrong")
	}
	select {
	case <-a.Watching():
	case <-time.After(30 * time.Second):
		t.Fatal("the tokens file is not watched")
	}
	// Replace the file the way a Secret volume update does: write aside, rename.
	tmp := filepath.Join(dir, ".tokens.tmp")
	if err := os.WriteFile(tmp, []byte("svc:new-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return admitted("new-token") })
	if admitted("old-token") {
		t.Fatal("removed token still admitted")
	}
}

// A change made after the tokens file was first read but before the watch started
// sends the watch no event; it is still applied. Catches: the change being lost
// until the next one (a rotated token refused, a revoked one admitted).
func TestTokensChangedBeforeTheWatchStartsAreApplied(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("old-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := gateway.NewAuthenticator(path, false, gateway.WithReloadSettle(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("new-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = a.Watch(ctx) }()
	waitUntil(t, func() bool { return a.Reloads() > 0 })
	h := a.Middleware(false, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for tok, want := range map[string]int{"new-token": 200, "old-token": 401} {
		req, _ := http.NewRequest(http.MethodGet, "/mcp/x", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := &statusRecorder{header: http.Header{}, code: 200}
		h.ServeHTTP(rec, req)
		if rec.code != want {
			t.Fatalf("%s: %d, want %d", tok, rec.code, want)
		}
	}
}

type statusRecorder struct {
	header http.Header
	code   int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int)        { s.code = code }

func TestTokenSetMatch(t *testing.T) {
	ts, err := gateway.ParseTokens([]byte("# comment\n\nalpha:tok-a\ntok-b\n  beta : tok-c  \n"))
	if err != nil {
		t.Fatal(err)
	}
	// A table, not a map: "tok-a " carries a deliberate trailing space.
	for _, c := range []struct{ tok, want string }{
		{"tok-a", "alpha"}, {"tok-b", "token-4"}, {"tok-c", "beta"}, {"tok-", ""}, {"", ""}, {"tok-a ", ""},
	} {
		name, ok := ts.Match(c.tok)
		if name != c.want || ok != (c.want != "") {
			t.Errorf("Match(%q) = %q %v, want %q", c.tok, name, ok, c.want)
		}
	}
	if _, err := gateway.ParseTokens([]byte("name:\n")); err == nil {
		t.Error("empty token accepted")
	}
}

func TestServerPanicsBecome500AndReadiness(t *testing.T) {
	up := newFakeAnthropic(t)
	boom := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("handler bug") })
	g := startGateway(t, up.srv.URL, gwSetup{opts: []gateway.Option{gateway.MountPublic("GET /boom", boom)}})
	status, _, b := do(t, http.MethodGet, g.url+"/boom", nil, "")
	var e anthropicErr
	if status != 500 || json.Unmarshal([]byte(b), &e) != nil || e.Error.Type != "api_error" {
		t.Fatalf("got %d %s", status, b)
	}
	// Still serving after the panic.
	if status, _, _ := do(t, http.MethodGet, g.url+"/healthz", nil, ""); status != 200 {
		t.Fatal("gateway stopped serving after a panic")
	}
	if g.server.NeedLeaderElection() {
		t.Fatal("the gateway must serve on every replica")
	}
	if status, _, b := do(t, http.MethodGet, g.url+"/nowhere", nil, ""); status != 404 || !strings.Contains(b, "not_found_error") {
		t.Fatalf("unknown route: %d %s", status, b)
	}
}

// TestShutdownDrainsInFlight: a call in flight when shutdown begins still
// completes; the server then stops and readiness turns false.
func TestShutdownDrainsInFlight(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	up := newFakeAnthropic(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		okBehaviour(w, r)
	})
	g := startGateway(t, up.srv.URL, gwSetup{})
	type result struct {
		msg *sdk.Message
		err error
	}
	res := make(chan result, 1)
	go func() {
		m, err := g.client().Messages.New(context.Background(), newParams())
		res <- result{m, err}
	}()
	<-started
	g.cancel()
	// Readiness drops as soon as shutdown begins.
	for g.server.Ready() {
		time.Sleep(time.Millisecond)
	}
	close(release)
	r := <-res
	if r.err != nil || r.msg.Content[0].Text != "hello" {
		t.Fatalf("in-flight call not drained: %v", r.err)
	}
	if err := <-g.done; err != nil {
		t.Fatalf("Start returned %v", err)
	}
	g.done <- nil // for the cleanup
}

// A replica is kept out of the Service until its ready checks hold, and says which
// does not. Catches: /readyz answering ok while the HealingRequest watch of a
// restarted gateway has not synced (its calls then got "healing unavailable").
func TestReadyzWaitsForReadyChecks(t *testing.T) {
	up := newFakeAnthropic(t)
	var synced atomic.Bool
	g := startGateway(t, up.srv.URL, gwSetup{opts: []gateway.Option{gateway.WithReadyCheck("HealingRequest watch not synced yet", synced.Load)}})
	status, _, body := do(t, http.MethodGet, g.url+"/readyz", nil, "")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "HealingRequest watch not synced yet") || g.server.Ready() {
		t.Fatalf("before the check holds: %d %q (Ready %t), want 503 naming the check", status, body, g.server.Ready())
	}
	if status, _, _ := do(t, http.MethodGet, g.url+"/healthz", nil, ""); status != http.StatusOK {
		t.Fatalf("healthz %d: liveness does not wait for readiness", status)
	}
	synced.Store(true)
	if status, _, body := do(t, http.MethodGet, g.url+"/readyz", nil, ""); status != http.StatusOK || !g.server.Ready() {
		t.Fatalf("after the check holds: %d %q, want 200", status, body)
	}
}
