// Package hop is the gateway's one hop-by-hop header policy, used by both proxies
// (Anthropic and MCP) in both directions.
package hop

import (
	"net/http"
	"net/textproto"
	"strings"
)

// headers are connection-scoped (RFC 9110 section 7.6.1, and the de-facto
// Proxy-Connection and Keep-Alive): they describe one hop and are never forwarded.
var headers = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// Remove deletes from h the hop-by-hop headers and every header its Connection
// header names (a sender marks its own connection-scoped headers so).
func Remove(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range headers {
		h.Del(k)
	}
}

// IsHopByHop reports whether name is always connection-scoped.
func IsHopByHop(name string) bool {
	name = http.CanonicalHeaderKey(name)
	for _, k := range headers {
		if k == name {
			return true
		}
	}
	return false
}
