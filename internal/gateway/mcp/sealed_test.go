package mcp

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// With a shared SessionKey, the session id the client holds carries the session
// (sealed), so any replica serves it: a client alternating between two proxies, across
// an upstream restart and a proxy restart, loses nothing and keeps its session id; it
// can neither read the id nor forge one. Catches: sessions known to one replica only
// (the other forwards an id the upstream never issued, 404), and ids that leak the
// upstream's session id or the client's initialize.
func TestSealedSessionsServeFromAnyReplica(t *testing.T) {
	up := newUpstream(t, false)
	key := bytes.Repeat([]byte{7}, SessionKeySize)
	opts := func() Options {
		return Options{Upstreams: []Upstream{{Name: "tools", URL: up.url(), Namespace: "ns", Service: "tools"}}, SessionKey: key}
	}
	a, b := startProxy(t, opts()), startProxy(t, opts())
	const version = "2025-11-25"
	init := rawPost(t, a.URL+"/mcp/tools", map[string]string{"Mcp-Protocol-Version": version},
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+version+`","capabilities":{},"clientInfo":{"name":"alternating-client","version":"1"}}}`)
	_, _ = io.Copy(io.Discard, init.Body)
	_ = init.Body.Close()
	sid := init.Header.Get("Mcp-Session-Id")
	if init.StatusCode != http.StatusOK || !strings.HasPrefix(sid, sealedPrefix) {
		t.Fatalf("initialize through A: %d, session id %q, want a sealed one", init.StatusCode, sid)
	}
	hdr := map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": version}
	if res := rawPost(t, b.URL+"/mcp/tools", hdr, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); res.StatusCode != http.StatusAccepted {
		t.Fatalf("notifications/initialized through B: %d", res.StatusCode)
	} else {
		_ = res.Body.Close()
	}
	call := func(via string, id, n int) {
		t.Helper()
		res := rawPost(t, via+"/mcp/tools", hdr, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"count","arguments":{"n":%d}}}`, id, n))
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), fmt.Sprintf(`"sum":%d`, n*(n+1)/2)) {
			t.Fatalf("call %d through %s: %d %s", id, via, res.StatusCode, body)
		}
		if got := res.Header.Get("Mcp-Session-Id"); got != "" && got != sid {
			t.Fatalf("call %d: the client's session id changed to %q", id, got)
		}
	}
	call(a.URL, 2, 2)
	call(b.URL, 3, 3)
	up.stop()
	up.start() // the upstream restarts: its sessions are gone
	call(b.URL, 4, 4)
	call(a.URL, 5, 2)
	c := startProxy(t, opts()) // a replica that never saw the session (or A restarted)
	call(c.URL, 6, 3)
	if got := up.inits.Load(); got != 4 {
		t.Fatalf("upstream saw %d initialize requests, want 4: the client's, then one per replica after the restart", got)
	}

	// The id says nothing readable: neither the upstream's session id nor the client's
	// initialize.
	raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(sid, sealedPrefix))
	for _, h := range up.seenHeaders() {
		if u := h.Get("Mcp-Session-Id"); u != "" && (strings.Contains(sid, u) || bytes.Contains(raw, []byte(u))) {
			t.Fatalf("the sealed id reveals the upstream session id %q", u)
		}
	}
	if bytes.Contains(raw, []byte("alternating-client")) {
		t.Fatal("the sealed id reveals the client's initialize")
	}
	// A forged (altered) id is no session of the proxy's: the upstream refuses it.
	forged := sid[:len(sid)-2] + map[bool]string{true: "AA", false: "BB"}[!strings.HasSuffix(sid, "AA")]
	res := rawPost(t, b.URL+"/mcp/tools", map[string]string{"Mcp-Session-Id": forged, "Mcp-Protocol-Version": version},
		`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"count","arguments":{"n":1}}}`)
	_ = res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("a forged session id got %d, want the upstream's 404", res.StatusCode)
	}
	// A key of the wrong size is refused.
	if _, err := NewProxy(Options{SessionKey: key[:16]}); err == nil {
		t.Fatal("a 16-byte session key was accepted")
	}
}
