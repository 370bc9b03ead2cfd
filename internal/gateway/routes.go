package gateway

import (
	"net/http"
	"slices"
	"strings"

	"github.com/selfheal-dev/selfheal/internal/gateway/anthropic"
	"github.com/selfheal-dev/selfheal/internal/gateway/limits"
)

// routes collects the gateway's patterns so that each route answers its own 405:
// a path served for some methods answers the others itself, instead of falling
// through to the /v1/ pass-through (which would send them to Anthropic with the
// organisation's key).
type routes struct {
	patterns []string
	handlers []http.Handler
	methods  map[string][]string // path -> methods it serves, for method patterns
}

func newRoutes() *routes { return &routes{methods: map[string][]string{}} }

func (rt *routes) handle(pattern string, h http.Handler) {
	rt.patterns = append(rt.patterns, pattern)
	rt.handlers = append(rt.handlers, h)
	if method, path, ok := strings.Cut(pattern, " "); ok {
		rt.methods[path] = append(rt.methods[path], method)
	}
}

// patternPath is the path of a ServeMux pattern ("GET /x" -> "/x").
func patternPath(pattern string) string {
	if _, path, ok := strings.Cut(pattern, " "); ok {
		return path
	}
	return pattern
}

// reservedV1 are the first segments under /v1/ that gateway routes own
// ("healing" for /v1/healing/events): no path under them is forwarded.
func (rt *routes) reservedV1() []string {
	var out []string
	for _, p := range rt.patterns {
		rest, ok := strings.CutPrefix(patternPath(p), "/v1/")
		if !ok || rest == "" {
			continue
		}
		seg, _, _ := strings.Cut(rest, "/")
		if !slices.Contains(out, seg) {
			out = append(out, seg)
		}
	}
	return out
}

func (rt *routes) mux() *http.ServeMux {
	mux := http.NewServeMux()
	for i, p := range rt.patterns {
		mux.Handle(p, rt.handlers[i])
	}
	for path, methods := range rt.methods {
		allow := slices.Clone(methods)
		if slices.Contains(allow, http.MethodGet) && !slices.Contains(allow, http.MethodHead) {
			allow = append(allow, http.MethodHead) // a GET pattern serves HEAD too
		}
		allowed := strings.Join(allow, ", ")
		mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allowed)
			limits.Refuse(w, false)
			anthropic.WriteError(w, http.StatusMethodNotAllowed, anthropic.ErrInvalidRequest,
				"method "+r.Method+" not allowed on "+path+": use "+allowed)
		}))
	}
	return mux
}

// apiPathGuard forwards only well-formed Anthropic API paths: /v1/ and segments
// of unreserved characters, none of them "." or "..", no percent-encoding (an
// encoded dot or slash would be decoded by a server behind the gateway), no empty
// segment, and none under a prefix the gateway's own routes own.
func apiPathGuard(reserved []string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !forwardablePath(r.URL.EscapedPath(), r.URL.Path, reserved) {
			limits.Refuse(w, false)
			anthropic.WriteError(w, http.StatusNotFound, anthropic.ErrNotFound, "no route for this path")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func forwardablePath(escaped, decoded string, reserved []string) bool {
	if escaped != decoded {
		return false // percent-encoding of any kind
	}
	rest, ok := strings.CutPrefix(decoded, "/v1/")
	if !ok || rest == "" {
		return false
	}
	for i, seg := range strings.Split(rest, "/") {
		if seg == "" || seg[0] == '.' || (i == 0 && slices.Contains(reserved, seg)) {
			return false
		}
		for _, c := range []byte(seg) {
			if !unreservedByte(c) {
				return false
			}
		}
	}
	return true
}

// unreservedByte is an RFC 3986 unreserved character: letters, digits, - _ . ~.
func unreservedByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return c == '-' || c == '_' || c == '.' || c == '~'
}
