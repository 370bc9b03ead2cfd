// Package gateway is the embedded HTTP server in front of Claude and the MCP
// servers: config, client authentication, metrics, and the routes. The
// Anthropic pass-through lives in package anthropic; the MCP proxy and the
// healing event stream are mounted into the server as handlers.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/selfheal-dev/selfheal/internal/gateway/anthropic"
)

// DefaultBindAddress is where the gateway listens unless told otherwise.
const DefaultBindAddress = ":8090"

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

	handler http.Handler
	ready   atomic.Bool
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

// WithTransport sets the outbound transport (default NewOutboundTransport).
func WithTransport(rt http.RoundTripper) Option { return func(s *Server) { s.transport = rt } }

// WithDelayReporter receives every Claude retry wait (processing_delay).
func WithDelayReporter(d anthropic.DelayReporter) Option { return func(s *Server) { s.delays = d } }

// WithAnthropicOptions adjusts the proxy's options after they are derived
// from the config (tests inject clock and jitter here).
func WithAnthropicOptions(f func(*anthropic.Options)) Option {
	return func(s *Server) { s.anthropicO = f }
}

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
	if s.transport == nil {
		s.transport = NewOutboundTransport(OutboundOptions{})
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
		Delays:         s.delays,
		Metrics:        Recorder{},
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

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.Handle("/v1/", s.auth.Middleware(true, proxy))
	for _, m := range s.mounts {
		h := m.handler
		if !m.public {
			h = s.auth.Middleware(false, h)
		}
		mux.Handle(m.pattern, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		anthropic.WriteError(w, http.StatusNotFound, "not_found_error", "no route for "+r.URL.Path)
	})
	s.handler = s.withLogger(recoverPanics(mux))
	s.log.V(1).Info("Gateway configured", "config", cfg, "apiKey", cfg.Anthropic.APIKey.Key())
	return s, nil
}

// Handler is the gateway's root handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// NeedLeaderElection is false: every replica serves.
func (s *Server) NeedLeaderElection() bool { return false }

// Ready reports whether the server is serving (the /readyz answer).
func (s *Server) Ready() bool { return s.ready.Load() }

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
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
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
