// Package ui is the gateway's /ui page: a live view of healings (the healing event
// stream), the recent HealingRequests and the analytics of the namespaces' outcomes.
// Its assets are embedded; a login exchanges a client token for a sealed,
// HttpOnly, SameSite=Strict session cookie that authenticates /ui and its data
// endpoints only (the Claude and MCP routes never read cookies).
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"slices"
	"time"

	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrl "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/selfheal-dev/selfheal/internal/gateway/access"
	"github.com/selfheal-dev/selfheal/internal/gateway/limits"
)

//go:embed assets
var assets embed.FS

// Paths of the page.
const (
	Path       = "/ui/"
	LoginPath  = "/ui/login"
	LogoutPath = "/ui/logout"
	// CookieName is the session cookie.
	CookieName = "selfheal_ui"
)

// ContentSecurityPolicy admits only the page's own scripts, styles and requests:
// no inline code, no other origin, no framing.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// DefaultSessionTTL is how long a login lasts.
const DefaultSessionTTL = 8 * time.Hour

// maxLoginBytes bounds a login form: a token and little else.
const maxLoginBytes = 4 << 10

// Tokens is what the page needs from the gateway's authenticator.
type Tokens interface {
	Disabled() bool
	Identify(tok string) (string, [sha256.Size]byte, bool)
	Current(name string, digest [sha256.Size]byte) (*access.Client, bool)
}

// Options configures the page.
type Options struct {
	Tokens Tokens
	// SessionKey seals the cookies (the gateway's sessions key); nil: a random key,
	// so logins last as long as this process and are valid on this replica only.
	SessionKey []byte
	// Events serves the healing event stream (the gateway's, with its stream caps).
	Events http.Handler
	// Reader reads HealingRequests and HealingPolicies (the gateway's cache); nil
	// when there is no cluster.
	Reader client.Reader
	// Namespaces the gateway watches; empty: all.
	Namespaces []string
	// Held counts the calls held for a request on this replica.
	Held func(namespace, request string) int
	// AllowedOrigins are accepted on the login and logout forms besides the page's own.
	AllowedOrigins []string
	// SessionTTL defaults to DefaultSessionTTL.
	SessionTTL time.Duration
	// MaxHistory bounds the requests listed; default DefaultMaxHistory.
	MaxHistory int
	Clock      clock.PassiveClock
}

// Handler serves /ui/.
type Handler struct {
	opts   Options
	sealer *sealer
	mux    *http.ServeMux
	login  *template.Template
	etag   map[string]string
}

// New returns the page's handler; mount it without the gateway's token middleware
// (it authenticates with its cookie).
func New(opts Options) (*Handler, error) {
	if opts.Tokens == nil || opts.Events == nil {
		return nil, errors.New("ui: an authenticator and the healing event stream are required")
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.MaxHistory <= 0 {
		opts.MaxHistory = DefaultMaxHistory
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Held == nil {
		opts.Held = func(string, string) int { return 0 }
	}
	s, err := newSealer(opts.SessionKey)
	if err != nil {
		return nil, err
	}
	login, err := template.ParseFS(assets, "assets/login.html")
	if err != nil {
		return nil, err
	}
	h := &Handler{opts: opts, sealer: s, login: login, etag: map[string]string{}}
	_ = fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, _ error) error {
		if d != nil && !d.IsDir() {
			b, _ := assets.ReadFile(p)
			sum := sha256.Sum256(b)
			h.etag[path.Base(p)] = `"` + hex.EncodeToString(sum[:8]) + `"`
		}
		return nil
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, Path, http.StatusSeeOther) })
	mux.HandleFunc("GET /ui/{$}", h.page)
	mux.HandleFunc("GET "+LoginPath, h.loginForm)
	mux.HandleFunc("POST "+LoginPath, h.loginPost)
	mux.HandleFunc("POST "+LogoutPath, h.logout)
	mux.HandleFunc("GET /ui/assets/{file}", h.asset)
	mux.Handle("GET /ui/api/events", h.authed(opts.Events))
	mux.Handle("GET /ui/api/history", h.authed(http.HandlerFunc(h.history)))
	mux.Handle("GET /ui/api/analytics", h.authed(http.HandlerFunc(h.analytics)))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, _ *http.Request) { jsonError(w, http.StatusNotFound, "no such page") })
	h.mux = mux
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cache-Control", "no-store")
	h.mux.ServeHTTP(w, r)
}

// viewer is the client a request's cookie logs in, and whether it does.
func (h *Handler) viewer(r *http.Request) (*access.Client, bool) {
	if h.opts.Tokens.Disabled() {
		return nil, true
	}
	c, err := r.Cookie(CookieName)
	if err != nil {
		return nil, false
	}
	se, err := h.sealer.open(c.Value, h.opts.Clock.Now())
	if err != nil {
		return nil, false
	}
	return h.opts.Tokens.Current(se.Name, [sha256.Size]byte(se.Digest))
}

// authed admits requests with a valid session, with the token's access in the
// context as the gateway's middleware would put it; others get 401 without their
// body read.
func (h *Handler) authed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := h.viewer(r)
		if !ok {
			limits.Refuse(w, false)
			jsonError(w, http.StatusUnauthorized, "not logged in: log in at "+LoginPath)
			return
		}
		ctx := ctrl.IntoContext(r.Context(), ctrl.FromContext(r.Context()).WithValues("client", c.ClientName()))
		next.ServeHTTP(w, r.WithContext(access.NewContext(ctx, c)))
	})
}

func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.viewer(r); !ok {
		http.Redirect(w, r, LoginPath, http.StatusSeeOther)
		return
	}
	h.serveFile(w, r, "index.html", false)
}

func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.viewer(r); ok {
		http.Redirect(w, r, Path, http.StatusSeeOther)
		return
	}
	h.renderLogin(w, http.StatusOK, "")
}

func (h *Handler) renderLogin(w http.ResponseWriter, status int, msg string) {
	var b bytes.Buffer
	if err := h.login.Execute(&b, map[string]string{"Error": msg}); err != nil {
		jsonError(w, http.StatusInternalServerError, "rendering the login page failed")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

func (h *Handler) loginPost(w http.ResponseWriter, r *http.Request) {
	if !h.sameOrigin(r) {
		limits.Refuse(w, false)
		jsonError(w, http.StatusForbidden, "cross-origin login refused")
		return
	}
	if h.opts.Tokens.Disabled() {
		http.Redirect(w, r, Path, http.StatusSeeOther)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBytes)
	if err := r.ParseForm(); err != nil {
		h.renderLogin(w, http.StatusBadRequest, "The login form could not be read.")
		return
	}
	name, digest, ok := h.opts.Tokens.Identify(r.PostForm.Get("token"))
	if !ok {
		ctrl.FromContext(r.Context()).V(1).Info("Refused /ui login")
		h.renderLogin(w, http.StatusUnauthorized, "That token is not accepted by this gateway.")
		return
	}
	exp := h.opts.Clock.Now().Add(h.opts.SessionTTL)
	v, err := h.sealer.seal(session{Name: name, Digest: digest[:], Expires: exp.Unix()})
	if err != nil {
		jsonError(w, http.StatusInternalServerError, "creating the session failed")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: v, Path: "/ui", Expires: exp, MaxAge: int(h.opts.SessionTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureRequest(r)})
	ctrl.FromContext(r.Context()).Info("Logged in to /ui", "client", name)
	http.Redirect(w, r, Path, http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if !h.sameOrigin(r) {
		limits.Refuse(w, false)
		jsonError(w, http.StatusForbidden, "cross-origin logout refused")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/ui", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureRequest(r)})
	http.Redirect(w, r, LoginPath, http.StatusSeeOther)
}

// secureRequest reports whether the browser reached the page over TLS: directly, or
// through a proxy that terminated it (then the cookie must be Secure too; a forged
// header only makes the sender's own cookie stricter).
func secureRequest(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

// sameOrigin is the CSRF check of the forms (besides SameSite=Strict): the Origin a
// browser names must be the page's own host or an allowed origin. Under
// Referrer-Policy: no-referrer a browser posts "Origin: null"; then its
// Sec-Fetch-Site must say same-origin. A request with neither header does not come
// from a browser, which is what CSRF needs.
func (h *Handler) sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o != "" && o != "null" {
		if slices.Contains(h.opts.AllowedOrigins, o) {
			return true
		}
		u, err := url.Parse(o)
		return err == nil && u.Host == r.Host && (u.Scheme == "http" || u.Scheme == "https")
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return true
	case "":
		return o == ""
	}
	return false
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

func (h *Handler) asset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name == "login.html" || name == "index.html" {
		jsonError(w, http.StatusNotFound, "no such asset")
		return
	}
	h.serveFile(w, r, name, true)
}

// serveFile writes an embedded file with its type. Assets are cached and revalidated
// by ETag (they change with the binary); the page itself, which only a logged-in
// viewer gets, is never stored.
func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, name string, cache bool) {
	ct, ok := contentTypes[path.Ext(name)]
	b, err := assets.ReadFile("assets/" + name)
	if !ok || err != nil {
		jsonError(w, http.StatusNotFound, "no such asset")
		return
	}
	w.Header().Set("Content-Type", ct)
	if !cache {
		_, _ = w.Write(b)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", h.etag[name])
	if r.Header.Get("If-None-Match") == h.etag[name] {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
