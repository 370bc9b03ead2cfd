package alerts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Options configure Start.
type Options struct {
	// Addr is the address to listen on; "127.0.0.1:0" (a free port) when empty. The
	// port chosen at Start is kept for the server's lifetime, across SetServing.
	Addr string
	// Stateless serves only the sessionless revision: every request is handled on its
	// own, no Mcp-Session-Id is issued, and GET/DELETE are refused. When false (the
	// default), the server issues sessions to clients that initialize with the
	// 2025-11-25 revision and still answers 2026-07-28 (stateless) requests.
	Stateless bool
	// KeepHangOnRestart keeps hang mode across Restart and a stop/start of serving.
	// By default a (re)start clears it: a new process is not stuck like the old one,
	// which is what lets healing by restart fix a hang.
	KeepHangOnRestart bool
}

// Server is the alerts MCP server with the controls a demo needs to play a pod's
// process: serving or not (listener closed), hanging, restarted.
type Server struct {
	opts Options
	addr string

	mu         sync.Mutex
	serving    bool
	closed     bool
	hs         *http.Server
	ln         net.Listener
	mcp        *mcp.Server
	stopped    chan struct{} // closed when the current process stops
	hang       bool
	unhang     chan struct{} // closed when hang mode ends
	generation int

	calls    atomic.Int64
	held     atomic.Int64
	requests atomic.Int64
}

// Start binds the listener and starts serving.
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", opts.Addr, err)
	}
	s := &Server{opts: opts, addr: ln.Addr().String()}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startLocked(ln)
	return s, nil
}

// URL is the MCP endpoint, http://127.0.0.1:PORT/mcp. The server answers MCP on any
// path; /mcp is the conventional one.
func (s *Server) URL() string { return "http://" + s.addr + "/mcp" }

// Addr is the host:port the server listens on while serving.
func (s *Server) Addr() string { return s.addr }

// SetServing starts or stops serving. Stopping closes the listener and every open
// connection, so new connections are refused (ECONNREFUSED, not an HTTP error) and
// calls in flight fail as when a process dies. Starting again reopens the same port
// with a fresh MCP server: sessions of the previous process are gone. Setting the
// current state again does nothing.
func (s *Server) SetServing(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("alerts server is closed")
	}
	if on == s.serving {
		return nil
	}
	if !on {
		return s.stopLocked()
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("reopening %s: %w", s.addr, err)
	}
	s.startLocked(ln)
	return nil
}

// Restart stops and starts the process when it is serving: open connections are
// cut and a fresh MCP server (no sessions) takes the same port. When not serving it
// does nothing, since the next start is fresh anyway.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.serving {
		return nil
	}
	if err := s.stopLocked(); err != nil {
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("reopening %s: %w", s.addr, err)
	}
	s.startLocked(ln)
	return nil
}

// SetHang turns hang mode on or off. While on, every HTTP request is accepted and
// then held without an answer until hang mode ends (the request then proceeds), the
// client gives up, or the process stops.
func (s *Server) SetHang(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setHangLocked(on)
}

func (s *Server) setHangLocked(on bool) {
	if on == s.hang {
		return
	}
	s.hang = on
	if on {
		s.unhang = make(chan struct{})
	} else {
		close(s.unhang)
	}
}

// Serving reports whether the listener is open.
func (s *Server) Serving() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serving
}

// Hanging reports whether hang mode is on.
func (s *Server) Hanging() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hang
}

// Generation counts the starts of the process: 1 after Start, +1 for each restart or
// stop/start.
func (s *Server) Generation() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.generation
}

// Calls counts the tool calls that reached the tool, over all generations.
func (s *Server) Calls() int { return int(s.calls.Load()) }

// Requests counts the HTTP requests received, over all generations.
func (s *Server) Requests() int { return int(s.requests.Load()) }

// Sessions is the number of MCP sessions the current process holds.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for range s.mcp.Sessions() {
		n++
	}
	return n
}

// Held is the number of requests currently held by hang mode; tests wait on it
// instead of sleeping.
func (s *Server) Held() int { return int(s.held.Load()) }

// Close stops serving for good.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.serving {
		return s.stopLocked()
	}
	return nil
}

func (s *Server) startLocked(ln net.Listener) {
	s.generation++
	if !s.opts.KeepHangOnRestart {
		s.setHangLocked(false)
	}
	s.mcp = newMCPServer(func() { s.calls.Add(1) })
	server := s.mcp
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{
		Stateless: s.opts.Stateless,
		// The server sits behind the gateway, which may forward its client's Host.
		DisableLocalhostProtection: true,
	})
	s.stopped = make(chan struct{})
	stopped := s.stopped
	s.hs = &http.Server{
		Handler:           s.holdWhileHanging(handler, stopped),
		ReadHeaderTimeout: 10 * time.Second,
	}
	s.ln = ln
	s.serving = true
	go func(hs *http.Server) { _ = hs.Serve(ln) }(s.hs)
}

func (s *Server) stopLocked() error {
	s.serving = false
	close(s.stopped)
	// Close the listener here, not only through hs.Close: Serve may not have
	// registered it yet, and the port must be free when this returns.
	lnErr := s.ln.Close()
	// Close, not Shutdown: a dying process does not drain its connections.
	err := s.hs.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil // Serve had registered the listener closed just above
	}
	if err == nil && lnErr != nil && !errors.Is(lnErr, net.ErrClosed) {
		err = lnErr
	}
	for ss := range s.mcp.Sessions() {
		_ = ss.Close()
	}
	if err != nil {
		return fmt.Errorf("closing alerts server: %w", err)
	}
	return nil
}

// maxBody bounds the request body held in memory while hanging.
const maxBody = 4 << 20

// holdWhileHanging holds requests while hang mode is on.
func (s *Server) holdWhileHanging(next http.Handler, stopped <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		hang, unhang := s.hang, s.unhang
		s.mu.Unlock()
		if hang {
			// Read the body first: only then does net/http watch the connection and
			// cancel the request's context when the client gives up.
			body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
			if err != nil {
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			s.held.Add(1)
			released := s.wait(r.Context(), unhang, stopped)
			s.held.Add(-1)
			if !released {
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// wait reports whether hang mode ended while the request and its process were alive.
func (s *Server) wait(ctx context.Context, unhang, stopped <-chan struct{}) bool {
	select {
	case <-unhang:
		select {
		case <-stopped:
			return false
		default:
			return true
		}
	case <-stopped:
		return false
	case <-ctx.Done():
		return false
	}
}
