// Package mcp proxies MCP Streamable HTTP (the 2025-11-25 session revision and the
// 2026-07-28 stateless one) to in-cluster upstreams. When an upstream fails in a way
// the cluster can fix, it creates or joins a HealingRequest, holds the call while
// relaying the healing's steps to the client, then replays the call.
package mcp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/gateway/access"
	"github.com/selfheal-dev/selfheal/internal/gateway/healing"
	"github.com/selfheal-dev/selfheal/internal/gateway/hop"
	"github.com/selfheal-dev/selfheal/internal/gateway/limits"
	"github.com/selfheal-dev/selfheal/internal/gateway/outbound"
)

// ReplayMode says when a call that failed may be sent again after a healing.
type ReplayMode string

const (
	// ReplayUnsent replays only calls the upstream provably never received
	// (connection refused, dial errors, or an unknown-session 404).
	ReplayUnsent ReplayMode = "unsent"
	// ReplayAlways replays every held call (for idempotent tools).
	ReplayAlways ReplayMode = "always"
	// ReplayNever never replays: after healing the client gets an error and retries.
	ReplayNever ReplayMode = "never"
)

// Header names of the Streamable HTTP transport.
const (
	headerSessionID       = "Mcp-Session-Id"
	headerProtocolVersion = "Mcp-Protocol-Version"
	headerLastEventID     = "Last-Event-ID"
)

// Upstream is one MCP server the gateway fronts at /mcp/{Name}.
type Upstream struct {
	Name string
	URL  string
	// Namespace and Service are the Kubernetes Service the upstream runs as: the
	// target of the HealingRequest when it fails.
	Namespace string
	Service   string
	// CallTimeout bounds the wait for the upstream to start answering. Default 30s.
	CallTimeout time.Duration
	// Replay defaults to ReplayUnsent.
	Replay ReplayMode
}

// Healer is what the proxy needs from the healing package.
type Healer interface {
	Trigger(ctx context.Context, f healing.Failure) (string, error)
	Wait(ctx context.Context, namespace, request string) <-chan healing.Event
}

// Options configures the proxy.
type Options struct {
	Upstreams []Upstream
	// Healer heals failed upstreams; nil means healing is unavailable.
	Healer Healer
	// AllowedOrigins lists the browser origins allowed to call (exact match, or "*").
	// Requests without an Origin header are always allowed.
	AllowedOrigins []string
	// MaxBodyBytes limits request bodies. Default 4 MiB.
	MaxBodyBytes int64
	// A held call waits as long as its HealingRequest may take (its status.deadline,
	// which the Healer follows): the proxy has no timer of its own for it.
	//
	// StreamReconnectTimeout bounds how long a standalone GET stream is kept open
	// while its upstream cannot be reached (it is not a healing wait: GET streams
	// trigger none); the client then reconnects. Default 3m.
	StreamReconnectTimeout time.Duration
	// MaxReplays is how often one call is replayed after healings. Default 2.
	MaxReplays int
	// Transport reaches the upstreams: the gateway's one outbound transport (package
	// outbound), shared with the Anthropic proxy. Default: a new one.
	Transport http.RoundTripper
	// Metrics counts each upstream request and its latency by upstream name and
	// status; nil records nothing. The gateway passes its Recorder.
	Metrics Recorder
	// RetryInterval paces the reconnection of held standalone GET streams. Default 500ms.
	RetryInterval time.Duration
	// Budget is the gateway's budget of buffered request bytes; nil reserves nothing.
	Budget *limits.Budget
	// MaxSessions caps remembered sessions (least recently used forgotten first).
	// Default 4096.
	MaxSessions int
	// SessionIdleTimeout forgets a session unused for this long. Default 30m.
	SessionIdleTimeout time.Duration
	// ReportTimeout bounds the background report of a lost session. Default 10s.
	ReportTimeout time.Duration
	// Clock times session idleness; tests inject a fake one.
	Clock clock.PassiveClock
	// SessionKey (SessionKeySize bytes, shared by every replica) seals the session
	// state into the Mcp-Session-Id the client holds, so any replica, or this one
	// after a restart, serves the session: it re-creates the upstream session from the
	// sealed initialize when it needs to. Nil keeps sessions in this replica only.
	SessionKey []byte
}

// Recorder receives outbound metrics: code is the HTTP status, "error" (no
// response) or "timeout" (no response headers within the call timeout).
type Recorder interface {
	ObserveAttempt(upstream, code string, latency time.Duration)
}

type nopRecorder struct{}

func (nopRecorder) ObserveAttempt(string, string, time.Duration) {}

// Proxy is the http.Handler for /mcp/{name}.
type Proxy struct {
	opts      Options
	upstreams map[string]*upstream
	sessions  *sessionStore
	sealer    *sealer // nil without a SessionKey
	client    *http.Client
	log       logr.Logger
}

type upstream struct {
	Upstream
	url      *url.URL
	sessions *sessionStore

	mu sync.Mutex
	// healedAt is when a healing of this upstream last ended Healed.
	healedAt time.Time
}

// sessionLossGrace is how long after a healing a lost MCP session is taken as that
// healing's doing (it restarted the pods) rather than a new incident.
const sessionLossGrace = time.Minute

func (u *upstream) markHealed(now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.healedAt = now
}

func (u *upstream) healedWithin(now time.Time, d time.Duration) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return !u.healedAt.IsZero() && now.Sub(u.healedAt) < d
}

// session maps the session id the client holds to the upstream's current one, and
// remembers the client's initialize so the session can be re-created upstream.
type session struct {
	clientID string
	// key and lastUsed belong to the sessionStore (under its lock).
	key      sessionKey
	lastUsed time.Time

	mu              sync.Mutex
	upstreamID      string
	initialize      []byte // the client's initialize request, verbatim
	protocolVersion string
}

func (s *session) current() string {
	if s == nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.upstreamID
}

// NewProxy validates the upstreams and returns the proxy.
func NewProxy(opts Options) (*Proxy, error) {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 4 << 20
	}
	if opts.StreamReconnectTimeout <= 0 {
		opts.StreamReconnectTimeout = 3 * time.Minute
	}
	if opts.MaxReplays <= 0 {
		opts.MaxReplays = 2
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = 500 * time.Millisecond
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 4096
	}
	if opts.SessionIdleTimeout <= 0 {
		opts.SessionIdleTimeout = 30 * time.Minute
	}
	if opts.ReportTimeout <= 0 {
		opts.ReportTimeout = 10 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Transport == nil {
		opts.Transport = outbound.NewTransport(outbound.Options{})
	}
	if opts.Metrics == nil {
		opts.Metrics = nopRecorder{}
	}
	p := &Proxy{
		opts:      opts,
		upstreams: map[string]*upstream{},
		sessions:  newSessionStore(opts.MaxSessions, opts.SessionIdleTimeout, opts.Clock),
		client:    outbound.Client(opts.Transport),
		log:       ctrl.Log.WithName("mcp-proxy"),
	}
	if opts.SessionKey != nil {
		s, err := newSealer(opts.SessionKey)
		if err != nil {
			return nil, err
		}
		p.sealer = s
	}
	for i, u := range opts.Upstreams {
		if u.Name == "" {
			return nil, fmt.Errorf("upstreams[%d].name: required", i)
		}
		if _, dup := p.upstreams[u.Name]; dup {
			return nil, fmt.Errorf("upstreams[%d].name: duplicate %q", i, u.Name)
		}
		parsed, err := url.Parse(u.URL)
		if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
			return nil, fmt.Errorf("upstreams[%d].url: %q is not an http(s) URL", i, u.URL)
		}
		switch u.Replay {
		case "":
			u.Replay = ReplayUnsent
		case ReplayUnsent, ReplayAlways, ReplayNever:
		default:
			return nil, fmt.Errorf("upstreams[%d].replay: %q is not one of unsent, always, never", i, u.Replay)
		}
		if u.CallTimeout <= 0 {
			u.CallTimeout = 30 * time.Second
		}
		p.upstreams[u.Name] = &upstream{Upstream: u, url: parsed, sessions: p.sessions}
	}
	return p, nil
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if origin := r.Header.Get("Origin"); origin != "" && !p.originAllowed(origin) {
		writeHTTPError(w, http.StatusForbidden, nil, codeInvalidRequest, fmt.Sprintf("origin %q is not allowed", origin))
		return
	}
	name := r.PathValue("name")
	up := p.upstreams[name]
	if up == nil {
		limits.Refuse(w, false)
		writeHTTPError(w, http.StatusNotFound, nil, codeInvalidRequest, fmt.Sprintf("unknown MCP upstream %q", name))
		return
	}
	if client := access.FromContext(r.Context()); !client.AllowsUpstream(up.Name, up.Namespace) {
		limits.Refuse(w, false)
		writeHTTPError(w, http.StatusForbidden, nil, codeInvalidRequest, fmt.Sprintf("MCP upstream %q is outside the scope of client %q", name, client.ClientName()))
		return
	}
	switch r.Method {
	case http.MethodPost:
		p.servePOST(w, r, up)
	case http.MethodGet:
		p.serveGET(w, r, up)
	case http.MethodDelete:
		p.serveDELETE(w, r, up)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		writeHTTPError(w, http.StatusMethodNotAllowed, nil, codeInvalidRequest, "method not allowed")
	}
}

func (p *Proxy) originAllowed(origin string) bool {
	return slices.Contains(p.opts.AllowedOrigins, "*") || slices.Contains(p.opts.AllowedOrigins, origin)
}

func (u *upstream) session(clientID string) *session { return u.sessions.get(u.Name, clientID) }

// failure is an upstream outcome the cluster may be able to fix.
type failure struct {
	class  selfhealv1alpha1.FailureClass
	status int
	// unsent is true when the upstream provably never received the request.
	unsent bool
	// detail is for the client: what happened, without upstream addresses.
	detail string
	// cause is for the log and the HealingRequest: the transport error as it
	// was, URLs and addresses included. Empty when detail says it all.
	cause string
	// sessionID is the upstream session the failed request addressed.
	sessionID string
	// sentAt is when the failed request was sent: a failure sent before a healing
	// ended belongs to that healing's incident.
	sentAt time.Time
}

// forward sends one request upstream. It returns the response, or a failure when the
// outcome is one that healing may fix; other errors are returned as err.
//
// upstreamSID is the upstream session to address ("" for none); known says the
// client's session is one this proxy tracks, so a 404 means the session was lost.
func (p *Proxy) forward(ctx context.Context, up *upstream, method, rawQuery string, hdr http.Header, body []byte, upstreamSID string, known bool) (*http.Response, *failure, error) {
	target := *up.url
	target.RawQuery = rawQuery
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	// The call timeout covers the wait for response headers only: a streamed answer
	// may legitimately take longer.
	callCtx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(up.CallTimeout, cancel)
	gotConn, staleConn := false, false
	callCtx = httptrace.WithClientTrace(callCtx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			gotConn = true
			staleConn = info.Reused && info.WasIdle
		},
	})
	req, err := http.NewRequestWithContext(callCtx, method, target.String(), reader)
	if err != nil {
		timer.Stop()
		cancel()
		return nil, nil, fmt.Errorf("building upstream request: %w", err)
	}
	copyRequestHeaders(req.Header, hdr)
	if known {
		if upstreamSID != "" {
			req.Header.Set(headerSessionID, upstreamSID)
		} else {
			req.Header.Del(headerSessionID)
		}
	}
	start := time.Now()
	sent := func(f *failure) *failure { f.sentAt = start; return f }
	resp, err := p.client.Do(req)
	timedOut := !timer.Stop()
	code := "error"
	switch {
	case err == nil:
		code = strconv.Itoa(resp.StatusCode)
	case timedOut:
		code = "timeout"
	}
	if ctx.Err() == nil || err == nil {
		// A call the client abandoned says nothing about the upstream.
		p.opts.Metrics.ObserveAttempt(up.Name, code, time.Since(start))
	}
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		f := classifyError(err, timedOut, gotConn)
		f.sessionID = upstreamSID
		if staleConn && f.class == selfhealv1alpha1.FailureConnectionReset && up.Replay != ReplayNever && ctx.Value(freshConnKey{}) == nil {
			// A pooled idle connection the upstream had closed (it restarted): the
			// reset answers bytes it never read. Retry once on a new connection, as
			// net/http itself does for a connection closed while idle.
			if t, ok := p.opts.Transport.(interface{ CloseIdleConnections() }); ok {
				t.CloseIdleConnections()
			}
			return p.forward(context.WithValue(ctx, freshConnKey{}, true), up, method, rawQuery, hdr, body, upstreamSID, known)
		}
		return nil, sent(f), nil
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		_ = resp.Body.Close()
		return nil, sent(&failure{class: selfhealv1alpha1.FailureHTTP5xx, status: resp.StatusCode,
			detail: fmt.Sprintf("upstream answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))}), nil
	case http.StatusNotFound:
		if known {
			// The upstream no longer knows the session: it restarted or lost state.
			// A request for an unknown session is rejected before it is processed.
			_ = resp.Body.Close()
			return nil, sent(&failure{class: selfhealv1alpha1.FailureMCPSessionLost, status: resp.StatusCode, unsent: true,
				sessionID: upstreamSID, detail: "upstream lost the MCP session (404 for a known Mcp-Session-Id)"}), nil
		}
	}
	return resp, nil, nil
}

type freshConnKey struct{}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

func classifyError(err error, timedOut, gotConn bool) *failure {
	f := &failure{cause: healing.Redact(err.Error(), 512)}
	var opErr *net.OpError
	switch {
	case timedOut:
		f.class, f.detail = selfhealv1alpha1.FailureTimeout, "upstream did not answer within the call timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		f.class, f.unsent, f.detail = selfhealv1alpha1.FailureConnectionRefused, true, "connection refused"
	case errors.As(err, &opErr) && opErr.Op == "dial":
		f.class, f.unsent, f.detail = selfhealv1alpha1.FailureConnectionRefused, true, "could not connect"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		f.class, f.detail = selfhealv1alpha1.FailureConnectionReset, "connection reset"
	case isTimeout(err):
		f.class, f.detail = selfhealv1alpha1.FailureTimeout, "upstream timed out"
	default:
		f.class, f.detail = selfhealv1alpha1.FailureOther, "upstream request failed"
	}
	if !gotConn {
		// No connection was ever obtained: nothing was sent.
		f.unsent = true
	}
	return f
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// notForwarded are the request headers the proxy keeps to itself, besides the
// hop-by-hop ones (package hop): the client's credentials for the gateway, and what
// describes the client's own request.
var notForwarded = []string{
	"Host", "Content-Length", "Authorization", "Cookie", "X-Api-Key",
	// Origin was checked here; the upstream sees the gateway as its caller.
	"Origin", "Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest",
	// Compressed SSE could not be flushed event by event.
	"Accept-Encoding",
}

func copyRequestHeaders(dst, src http.Header) {
	h := src.Clone()
	hop.Remove(h)
	for _, k := range notForwarded {
		h.Del(k)
	}
	for k, vs := range h {
		dst[k] = vs
	}
}

func copyResponseHeaders(dst, src http.Header, clientSessionID string) {
	h := src.Clone()
	hop.Remove(h)
	h.Del("Content-Length") // the body is streamed
	for k, vs := range h {
		dst[k] = vs
	}
	if clientSessionID != "" && dst.Get(headerSessionID) != "" {
		dst.Set(headerSessionID, clientSessionID)
	}
}

// A relayed stream may stay open and idle for as long as its session (an MCP client's
// standalone GET): it waits in a read into a small buffer, and borrows the copy
// buffer only while bytes flow.
const (
	relayWaitSize   = 512
	relayBufferSize = 32 << 10
)

var relayBuffers = sync.Pool{New: func() any { return new([relayBufferSize]byte) }}

// relay copies an upstream response to the client, flushing as bytes arrive.
func relay(w http.ResponseWriter, resp *http.Response, clientSessionID string) error {
	defer closeQuietly(resp.Body)
	copyResponseHeaders(w.Header(), resp.Header, clientSessionID)
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	wait := make([]byte, relayWaitSize)
	for {
		n, err := resp.Body.Read(wait)
		if werr := writeFlushed(w, rc, wait[:n]); werr != nil {
			return werr
		}
		if err == nil && n == len(wait) {
			err = relayBurst(w, rc, resp.Body) // more is likely there
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// relayBurst copies with a borrowed copy buffer until a read does not fill it (what
// had arrived is relayed), then gives the buffer back.
func relayBurst(w http.ResponseWriter, rc *http.ResponseController, body io.Reader) error {
	buf := relayBuffers.Get().(*[relayBufferSize]byte)
	defer relayBuffers.Put(buf)
	for {
		n, err := body.Read(buf[:])
		if werr := writeFlushed(w, rc, buf[:n]); werr != nil {
			return werr
		}
		if err != nil || n < len(buf) {
			return err
		}
	}
}

func writeFlushed(w http.ResponseWriter, rc *http.ResponseController, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if _, err := w.Write(p); err != nil {
		return err
	}
	return rc.Flush()
}

func (p *Proxy) servePOST(w http.ResponseWriter, r *http.Request, up *upstream) {
	log := ctrl.LoggerFrom(r.Context()).WithValues("upstream", up.Name)
	// The body is kept for a replay after healing, held against the budget until
	// the call ends.
	held, err := limits.ReadBody(r, p.opts.MaxBodyBytes, p.opts.Budget)
	switch {
	case errors.Is(err, limits.ErrTooLarge):
		limits.Refuse(w, false)
		writeHTTPError(w, http.StatusRequestEntityTooLarge, nil, codeInvalidRequest, fmt.Sprintf("request body exceeds %d bytes", p.opts.MaxBodyBytes))
		return
	case errors.Is(err, limits.ErrBudget):
		limits.Refuse(w, true)
		writeHTTPError(w, http.StatusServiceUnavailable, nil, codeUpstreamUnavailable, "gateway busy: too many request bytes in flight, retry shortly")
		return
	case err != nil:
		limits.Refuse(w, false)
		writeHTTPError(w, http.StatusBadRequest, nil, codeParseError, "reading request body failed")
		return
	}
	defer held.Release()
	body := held.Bytes
	trimmed := bytes.TrimSpace(body)
	if !json.Valid(trimmed) {
		writeHTTPError(w, http.StatusBadRequest, nil, codeParseError, "parse error: request body is not valid JSON")
		return
	}
	var msg message
	batch := len(trimmed) > 0 && trimmed[0] == '['
	if !batch {
		if err := json.Unmarshal(trimmed, &msg); err != nil || (msg.Method == "" && !msg.isResponse()) {
			writeHTTPError(w, http.StatusBadRequest, nil, codeInvalidRequest, "invalid request: not a JSON-RPC message")
			return
		}
	}
	clientSID := r.Header.Get(headerSessionID)
	sess := p.sessionFor(up, clientSID)
	var resp *http.Response
	fail, err := p.ensureUpstreamSession(r.Context(), up, sess)
	if err == nil && fail == nil {
		//nolint:bodyclose // relay closes it; forward returns no open body with a failure
		resp, fail, err = p.forward(r.Context(), up, http.MethodPost, r.URL.RawQuery, r.Header, body, sess.current(), sess != nil)
	}
	if err != nil {
		if r.Context().Err() == nil {
			log.Error(err, "Forwarding MCP request")
			writeHTTPError(w, http.StatusBadGateway, msg.ID, codeUpstreamUnavailable, "forwarding to upstream failed")
		}
		return
	}
	if fail == nil {
		if msg.Method == "initialize" {
			clientSID = p.rememberSession(up, resp, body, "")
		}
		_ = relay(w, resp, clientSID)
		return
	}
	if batch || !msg.isCall() {
		// Notifications, responses and batches are not held: report the failure.
		status := http.StatusBadGateway
		if fail.status != 0 {
			status = fail.status
		}
		if fail.class == selfhealv1alpha1.FailureMCPSessionLost {
			status = http.StatusNotFound
		}
		writeHTTPError(w, status, msg.ID, codeUpstreamUnavailable, "upstream failed: "+fail.detail)
		return
	}
	p.hold(w, r, up, &msg, body, sess, fail)
}

// rememberSession records the session an initialize created, keyed by the id the
// client will hold, which it returns: the one the proxy minted, else a sealed one
// (with a SessionKey), else the upstream's own ("" for a sessionless upstream).
func (p *Proxy) rememberSession(up *upstream, resp *http.Response, initialize []byte, clientID string) string {
	upstreamID := resp.Header.Get(headerSessionID)
	if upstreamID == "" && clientID == "" {
		return "" // a sessionless upstream
	}
	if len(initialize) > maxRememberedInitialize {
		p.log.Info("Not remembering an MCP session: its initialize is too large to keep for recovery",
			"upstream", up.Name, "bytes", len(initialize))
		if clientID == "" {
			clientID = upstreamID
		}
		return clientID
	}
	version := initializeVersion(initialize)
	if clientID == "" && p.sealer != nil {
		sealed, err := p.sealer.seal(up.Name, sealedState{UpstreamID: upstreamID, Initialize: initialize, ProtocolVersion: version})
		if err == nil {
			clientID = sealed
		}
	}
	if clientID == "" {
		clientID = upstreamID
	}
	up.sessions.put(up.Name, &session{
		clientID:        clientID,
		upstreamID:      upstreamID,
		initialize:      bytes.Clone(initialize),
		protocolVersion: version,
	})
	return clientID
}

// initializeVersion is the protocol version an initialize request asks for.
func initializeVersion(initialize []byte) string {
	var init struct {
		Params struct {
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"params"`
	}
	_ = json.Unmarshal(initialize, &init)
	return init.Params.ProtocolVersion
}

// mintSessionID is the id a held initialize's client gets before the upstream has
// answered: sealed (with no upstream session yet) when there is a SessionKey.
func (p *Proxy) mintSessionID(up *upstream, initialize []byte) string {
	if p.sealer != nil && len(initialize) <= maxRememberedInitialize {
		if id, err := p.sealer.seal(up.Name, sealedState{Initialize: initialize, ProtocolVersion: initializeVersion(initialize)}); err == nil {
			return id
		}
	}
	return newSessionID()
}

func (p *Proxy) serveDELETE(w http.ResponseWriter, r *http.Request, up *upstream) {
	clientSID := r.Header.Get(headerSessionID)
	sess := p.sessionFor(up, clientSID)
	if sess != nil && sess.current() == "" {
		// Known only from its sealed id, with no upstream session yet: nothing to end.
		up.sessions.remove(up.Name, clientSID)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	resp, fail, err := p.forward(r.Context(), up, http.MethodDelete, r.URL.RawQuery, r.Header, nil, sess.current(), sess != nil)
	if clientSID != "" {
		up.sessions.remove(up.Name, clientSID)
	}
	switch {
	case err != nil:
		writeHTTPError(w, http.StatusBadGateway, nil, codeUpstreamUnavailable, "forwarding to upstream failed")
	case fail != nil && fail.class == selfhealv1alpha1.FailureMCPSessionLost:
		w.WriteHeader(http.StatusNoContent) // already gone upstream: the end the client wanted
	case fail != nil:
		writeHTTPError(w, http.StatusBadGateway, nil, codeUpstreamUnavailable, "upstream failed: "+fail.detail)
	default:
		_ = relay(w, resp, clientSID)
	}
}

func newSessionID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func trimForLog(s string) string {
	if len(s) > 200 {
		return s[:200]
	}
	return strings.TrimSpace(s)
}

// closeQuietly closes c, for a deferred close whose error nothing could act on. (A
// named function, not a closure: bodyclose follows it, so callers of relay and
// deliver are known to close the response body.)
func closeQuietly(c io.Closer) { _ = c.Close() }
