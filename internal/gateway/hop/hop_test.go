package hop

import (
	"net/http"
	"testing"
)

func TestRemove(t *testing.T) {
	h := http.Header{}
	for _, k := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Proxy-Authenticate", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		h.Set(k, "x")
	}
	h.Set("Connection", "close, X-Hop-Private ,  x-other")
	h.Set("X-Hop-Private", "secret")
	h.Set("X-Other", "1")
	h.Set("Content-Type", "application/json")
	h.Set("Mcp-Session-Id", "s")
	Remove(h)
	if len(h) != 2 || h.Get("Content-Type") == "" || h.Get("Mcp-Session-Id") == "" {
		t.Fatalf("left %v, want only the end-to-end headers", h)
	}
	if !IsHopByHop("transfer-encoding") || IsHopByHop("Content-Type") {
		t.Fatal("IsHopByHop")
	}
}
