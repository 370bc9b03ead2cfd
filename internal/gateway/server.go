// Package gateway is the embedded HTTP server in front of Claude and the MCP
// servers: config, client authentication, metrics, and the routes. The
// Anthropic pass-through lives in package anthropic; the MCP proxy and the
// healing event stream are mounted into the server as handlers.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/selfheal-dev/selfheal/internal/gateway/anthropic"
	"github.com/selfheal-dev/selfheal/internal/gateway/limits"
	"github.com/selfheal-dev/selfheal/internal/gateway/outbound"
)

// DefaultBindAddress is where the gateway listens unless told otherwise:
// loopback, so a gateway is only reachable from elsewhere when asked to be.
const DefaultBindAddress = "127.0.0.1:8443"

// maxHeaderBytes bounds a request's headers (net/http's default is 1 MiB, which
// times maxConnections unauthenticated clients would be a lot of memory).
const maxHeaderBytes = 32 << 10

// ShutdownTimeout bounds the drain of in-flight calls on shutdown.
const ShutdownTimeout = 10 * time.Second

type mount struct {
	pattern string
	handler http.Handler
	public  bool
}

// Server is the gateway. It implements manager.Runnable and
// LeaderElectionRunnable (it serves on every replica).
type Server struct {
	cfg        *Config
	addr       string
	ln         net.Listener
	log        logr.Logger
	auth       *Authenticator
	transport  http.RoundTripper
	anthropicO func(*anthropic.Options)
	delays     anthropic.DelayReporter
	mounts     []mount
	onShutdown []func()
	budget     *limits.Budget

	handler     http.Handler
	bodyTimeout time.Duration
	ready       atomic.Bool
	readyChecks []readyCheck
}

// readyCheck is one more condition of /readyz, named in its refusal.
type readyCheck struct {
	name string
	ok   func() bool
}

// Option configures a Server.
type Option func(*Server)

// WithBindAddress sets the listen address (default DefaultBindAddress).
func WithBindAddress(addr string) Option { return func(s *Server) { s.addr = addr } }

// WithListener serves on an existing listener (tests bind 127.0.0.1:0).
func WithListener(ln net.Listener) Option { return func(s *Server) { s.ln = ln } }

// WithLogger sets the base logger (default ctrl.Log named "gateway").
func WithLogger(l logr.Logger) Option { return func(s *Server) { s.log = l } }

// WithAuthenticator replaces the authenticator built from the config.
func WithAuthenticator(a *Authenticator) Option { return func(s *Server) { s.auth = a } }

// WithTransport sets the outbound transport (default outbound.NewTransport); share
// it with the MCP proxy.
func WithTransport(rt http.RoundTripper) Option { return func(s *Server) { s.transport = rt } }

// WithDelayReporter receives every Claude retry wait (processing_delay).
func WithDelayReporter(d anthropic.DelayReporter) Option { return func(s *Server) { s.delays = d } }

// WithAnthropicOptions adjusts the proxy's options after they are derived
// from the config (tests inject clock and jitter here).
func WithAnthropicOptions(f func(*anthropic.Options)) Option {
	return func(s *Server) { s.anthropicO = f }
}

// WithBudget shares the budget of buffered request bytes with the mounted
// handlers (default: one made from limits.maxBufferedBytes).
func WithBudget(b *limits.Budget) Option { return func(s *Server) { s.budget = b } }

// Mount serves h at pattern (a Go 1.22 ServeMux pattern such as
// "GET /v1/healing/events" or "/mcp/{name}") behind client authentication.
// The header that carried the gateway token is removed before h runs.
func Mount(pattern string, h http.Handler) Option {
	return func(s *Server) { s.mounts = append(s.mounts, mount{pattern: pattern, handler: h}) }
}

// MountPublic serves h at pattern without authentication.
func MountPublic(pattern string, h http.Handler) Option {
	return func(s *Server) { s.mounts = append(s.mounts, mount{pattern: pattern, handler: h, public: true}) }
}

// WithReadyCheck makes /readyz answer 503, naming the check, while ok reports false:
// a replica that cannot serve some route yet (its HealingRequest watch has not synced,
// so it could neither join a healing nor resume its events) is kept out of the
// Service's endpoints, as a restarted pod must be.
func WithReadyCheck(name string, ok func() bool) Option {
	return func(s *Server) { s.readyChecks = append(s.readyChecks, readyCheck{name: name, ok: ok}) }
}

// OnShutdown runs f when shutdown begins, before in-flight calls are
// drained: long-lived streams (SSE subscribers) send their final event and
// end here, so the drain is not held up by them.
func OnShutdown(f func()) Option { return func(s *Server) { s.onShutdown = append(s.onShutdown, f) } }

// New builds the gateway from a validated config.
func New(cfg *Config, opts ...Option) (*Server, error) {
	s := &Server{cfg: cfg, addr: DefaultBindAddress, log: ctrl.Log.WithName("gateway")}
	for _, o := range opts {
		o(s)
	}
	if s.auth == nil {
		a, err := NewAuthenticatorFromConfig(cfg)
		if err != nil {
			return nil, err
		}
		s.auth = a
	}
	if s.auth.Disabled() && !cfg.Auth.AllowUnauthenticated && !isLoopback(s.bindAddress()) {
		return nil, fmt.Errorf("auth.mode: none would serve the Claude key to anyone who reaches %s, which is not a loopback address: "+
			"bind the gateway to 127.0.0.1, use auth.tokensFile, or set auth.allowUnauthenticated: true", s.bindAddress())
	}
	if s.transport == nil {
		s.transport = outbound.NewTransport(outbound.Options{})
	}
	if s.budget == nil {
		s.budget = limits.NewBudget(cfg.Limits.GetMaxBufferedBytes())
	}
	base, err := url.Parse(cfg.Anthropic.GetBaseURL())
	if err != nil {
		return nil, fmt.Errorf("anthropic.baseURL: %w", err)
	}
	ao := anthropic.Options{
		BaseURL:        base,
		Transport:      s.transport,
		MaxRetries:     cfg.Anthropic.GetMaxRetries(),
		TotalTimeout:   cfg.Anthropic.GetTotalTimeout(),
		AttemptTimeout: cfg.Anthropic.GetAttemptTimeout(),
		MaxBodyBytes:   cfg.Anthropic.GetMaxBodyBytes(),
		Budget:         s.budget,
		Delays:         s.delays,
		Metrics:        NewRecorder(cfg),
	}
	if !cfg.Anthropic.APIKey.PassThrough {
		key := cfg.Anthropic.APIKey.Key()
		if key.IsZero() {
			return nil, errors.New("anthropic.apiKey: no key loaded (use LoadConfig or ParseConfig)")
		}
		ao.APIKey = key.Value
	}
	if s.anthropicO != nil {
		s.anthropicO(&ao)
	}
	proxy, err := anthropic.New(ao)
	if err != nil {
		return nil, err
	}

	rt := newRoutes()
	rt.handle("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	rt.handle("GET /readyz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if why := s.notReady(); why != "" {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	for _, m := range s.mounts {
		h := m.handler
		if !m.public {
			h = s.auth.Middleware(false, h)
			if strings.HasPrefix(patternPath(m.pattern), "/v1/") {
				h = originCheck(cfg.AllowedOrigins, h)
			}
		}
		rt.handle(m.pattern, h)
	}
	rt.handle("/v1/", apiPathGuard(rt.reservedV1(), originCheck(cfg.AllowedOrigins, s.auth.Middleware(true, proxy))))
	rt.handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limits.Refuse(w, false)
		anthropic.WriteError(w, http.StatusNotFound, anthropic.ErrNotFound, "no route for "+r.URL.Path)
	}))
	mux := rt.mux()
	s.bodyTimeout = cfg.Limits.GetBodyReadTimeout()
	s.handler = s.withLogger(recoverPanics(s.bodyDeadline(mux)))
	s.log.V(1).Info("Gateway configured", "config", cfg, "apiKey", cfg.Anthropic.APIKey.Key())
	return s, nil
}

// Handler is the gateway's root handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// NeedLeaderElection is false: every replica serves.
func (s *Server) NeedLeaderElection() bool { return false }

// Ready reports whether the server is serving and every ready check holds (the
// /readyz answer).
func (s *Server) Ready() bool { return s.notReady() == "" }

// notReady says why the server is not ready; empty when it is.
func (s *Server) notReady() string {
	if !s.ready.Load() {
		return "not ready"
	}
	for _, c := range s.readyChecks {
		if !c.ok() {
			return "not ready: " + c.name
		}
	}
	return ""
}

// Start serves until ctx is done, then stops accepting, lets OnShutdown
// hooks end long-lived streams and drains in-flight calls for up to
// ShutdownTimeout before closing what is left.
func (s *Server) Start(ctx context.Context) error {
	ln := s.ln
	if ln == nil {
		var err error
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", s.addr); err != nil {
			return fmt.Errorf("gateway listen on %s: %w", s.addr, err)
		}
	}
	ln = limits.ConnLimit(ln, s.cfg.Limits.GetMaxConnections())
	// No ReadTimeout: it would also end long streams. Bodies get their own
	// deadline (bodyDeadline); headers this one.
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.Limits.GetReadHeaderTimeout(),
		IdleTimeout:       s.cfg.Limits.GetIdleTimeout(),
		MaxHeaderBytes:    maxHeaderBytes,
	}
	s.warnIfOpen(ln.Addr().String())
	for _, f := range s.onShutdown {
		srv.RegisterOnShutdown(f)
	}
	watchCtx, stopWatch := context.WithCancel(ctrl.IntoContext(ctx, s.log))
	defer stopWatch()
	go func() {
		if err := s.auth.Watch(watchCtx); err != nil {
			s.log.Error(err, "Client tokens will not be reloaded on change")
		}
	}()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.ready.Store(true)
	s.log.Info("Gateway serving", "address", ln.Addr().String())

	select {
	case err := <-errc:
		s.ready.Store(false)
		return fmt.Errorf("gateway serve: %w", err)
	case <-ctx.Done():
	}
	s.ready.Store(false)
	s.log.Info("Gateway shutting down, draining in-flight calls", "timeout", ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("gateway drain: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("gateway serve: %w", err)
	}
	return nil
}

// bindAddress is the address the gateway serves on.
func (s *Server) bindAddress() string {
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.addr
}

// warnIfOpen says, at every start, when no client token can get in or when
// every client can.
func (s *Server) warnIfOpen(addr string) {
	switch {
	case s.auth.Disabled():
		s.log.Info("WARNING: client authentication is off (auth.mode: none): anyone who reaches this address uses the organisation's Claude key",
			"address", addr, "allowUnauthenticated", s.cfg.Auth.AllowUnauthenticated)
	case s.auth.Tokens() == 0:
		s.log.Error(errors.New("no client tokens"), "The tokens file holds no token: every client is refused", "tokensFile", s.cfg.Auth.TokensFile)
	}
}

// isLoopback reports whether addr (host:port) only accepts local connections.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// bodyDeadline gives a request body bodyTimeout to arrive, whoever reads it (a
// handler, or net/http discarding what a handler left). The deadline is lifted
// once the body has been read, so a long response (a stream) is not cut.
func (s *Server) bodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			if rc.SetReadDeadline(time.Now().Add(s.bodyTimeout)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
			}
		}
		next.ServeHTTP(w, r)
	})
}

type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// originCheck refuses browser requests from origins not in allowed ("*" allows
// any). Requests without Origin do not come from a browser and pass.
func originCheck(allowed []string, next http.Handler) http.Handler {
	any := slices.Contains(allowed, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o != "" && !any && !slices.Contains(allowed, o) {
			limits.Refuse(w, false)
			anthropic.WriteError(w, http.StatusForbidden, anthropic.ErrPermission, fmt.Sprintf("origin %q is not allowed (allowedOrigins)", o))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) withLogger(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(ctrl.IntoContext(r.Context(), s.log)))
	})
}

// recoverPanics turns a handler panic into a 500 in the Anthropic error
// shape (or, once the response has started, an aborted connection), so one
// bad request never takes the gateway down.
func recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &trackingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler { //nolint:errorlint // sentinel compared as the net/http docs do
				panic(v)
			}
			ctrl.FromContext(r.Context()).Error(fmt.Errorf("panic: %v", v), "Handler panicked", "path", r.URL.Path)
			if rw.wrote {
				panic(http.ErrAbortHandler)
			}
			anthropic.WriteError(w, http.StatusInternalServerError, anthropic.ErrAPI, "internal gateway error")
		}()
		next.ServeHTTP(rw, r)
	})
}

// trackingWriter notes whether the response has started. It keeps
// http.Flusher and Unwrap so streaming handlers work through it.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (t *trackingWriter) WriteHeader(code int) {
	if code >= 200 {
		t.wrote = true
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(b)
}

func (t *trackingWriter) Flush() {
	t.wrote = true
	_ = http.NewResponseController(t.ResponseWriter).Flush()
}

func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }
