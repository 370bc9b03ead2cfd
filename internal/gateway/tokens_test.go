package gateway_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/selfheal-dev/selfheal/internal/gateway"
)

func watchTokens(t *testing.T, content string, settle time.Duration) (*gateway.Authenticator, string, func(string) bool) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := gateway.NewAuthenticator(path, false, gateway.WithReloadSettle(settle))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = a.Watch(ctx) }()
	h := a.Middleware(false, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	admitted := func(tok string) bool {
		req, _ := http.NewRequest(http.MethodGet, "/mcp/x", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := &statusRecorder{header: http.Header{}, code: 200}
		h.ServeHTTP(rec, req)
		return rec.code == 200
	}
	select {
	case <-a.Watching():
	case <-time.After(30 * time.Second):
		t.Fatal("the tokens file is not watched")
	}
	return a, path, admitted
}

// Deleting the tokens file (a removed Secret) leaves no token valid. Catches: a
// failed reload keeping the old tokens.
func TestDeletedTokensFileAdmitsNobody(t *testing.T) {
	a, path, admitted := watchTokens(t, "a:tok-a\n", 50*time.Millisecond)
	if !admitted("tok-a") {
		t.Fatal("tok-a not admitted before the deletion")
	}
	before := a.Reloads()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return a.Reloads() > before })
	if admitted("tok-a") || a.Tokens() != 0 {
		t.Fatal("a token of the deleted file is still admitted")
	}
	// Restored: admitted again.
	if err := os.WriteFile(path, []byte("a:tok-a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return admitted("tok-a") })
}

// An editor writing the file in place is never read half-way, and a file that does
// not parse changes nothing. Catches: reloading on every write event (the half-written
// "b:tok" would be admitted, then kept when the finished file fails to parse).
func TestTokensFileReadOnlyWhenSettled(t *testing.T) {
	a, path, admitted := watchTokens(t, "a:tok-a\n", 2*time.Second)
	before := a.Reloads()
	var sawPartial atomic.Bool
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if admitted("tok") {
				sawPartial.Store(true)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("b:tok")
	// A slow writer: the half-written file stays on disk for a moment.
	time.Sleep(200 * time.Millisecond)
	_, _ = f.WriteString("-b\nbroken-line-without-token:\n")
	_ = f.Close()
	waitUntil(t, func() bool { return a.Reloads() > before })
	close(stop)
	<-watched
	if sawPartial.Load() || admitted("tok") {
		t.Fatal("a token from a half-written tokens file was admitted")
	}
	if admitted("tok-b") {
		t.Fatal("a token from a file that does not parse was admitted")
	}
	if !admitted("tok-a") {
		t.Fatal("the previous tokens were dropped for a file that does not parse")
	}
}

// An empty tokens file starts a gateway that refuses everyone, and says so.
func TestEmptyTokensFileRefusesEveryoneLoudly(t *testing.T) {
	up := newFakeAnthropic(t)
	g := startGateway(t, up.srv.URL, gwSetup{tokens: "# nobody yet\n"})
	if status, _, b := do(t, http.MethodPost, g.url+"/v1/messages", map[string]string{"X-Api-Key": clientToken}, `{}`); status != 401 {
		t.Fatalf("empty tokens file: %d %s", status, b)
	}
	waitUntil(t, func() bool { return strings.Contains(g.logs.String(), "every client is refused") })
}
