// Package anthropic is the gateway's pass-through for the Anthropic API
// (/v1/*): it injects or passes through the API key, retries what the
// official SDKs retry within one total budget, and streams SSE event by event.
//
// Streaming and retries. The gateway may retry only before the first byte
// reaches the client. For a stream it reads the upstream's events until the
// first content block; an overloaded_error (or a cut) before that point is
// retried transparently. When a retry wait of a stream:true request is long
// (>= KeepaliveAfter, 1 s by default) the gateway commits "200
// text/event-stream" to the client and sends ": keepalive" comment lines
// during the wait, so the client and any proxy in between see a live
// connection; from then on an upstream failure can only be reported in-band,
// as an SSE "event: error" in the Anthropic shape. Short waits commit
// nothing, so the client still gets the upstream's real status code.
// Once content has gone out, an upstream error is passed through and a cut
// connection is reported as an "event: error" of type api_error, never as a
// silently shorter stream.
package anthropic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/selfheal-dev/selfheal/internal/gateway/hop"
	"github.com/selfheal-dev/selfheal/internal/gateway/limits"
	"github.com/selfheal-dev/selfheal/internal/sse"
)

// Upstream is the upstream label of this proxy in metrics and events.
const Upstream = "anthropic"

// Defaults for Options fields left zero.
const (
	DefaultKeepaliveAfter    = time.Second
	DefaultKeepaliveInterval = 5 * time.Second
	DefaultInitialBackoff    = 500 * time.Millisecond
	DefaultMaxBackoff        = 8 * time.Second
	maxErrorBody             = 1 << 20
)

// DelayReporter hears about every retry wait, e.g. to publish a
// processing_delay event to UIs. It must not block.
type DelayReporter interface {
	ProcessingDelay(upstream string, attempt int, wait time.Duration, reason string)
}

// DelayReporterFunc adapts a function to DelayReporter.
type DelayReporterFunc func(upstream string, attempt int, wait time.Duration, reason string)

// ProcessingDelay calls f.
func (f DelayReporterFunc) ProcessingDelay(upstream string, attempt int, wait time.Duration, reason string) {
	f(upstream, attempt, wait, reason)
}

// Recorder receives outbound metrics. code is the HTTP status, "error" (no
// response) or "timeout" (the attempt timed out).
type Recorder interface {
	ObserveAttempt(upstream, code string, latency time.Duration)
	ObserveRetry(upstream, reason string)
	ObserveDelay(upstream string, wait time.Duration)
}

// Options configure a Proxy. BaseURL and Transport are required.
type Options struct {
	BaseURL *url.URL
	// APIKey returns the key injected as x-api-key; the client's
	// Authorization and x-api-key (its gateway token) are removed. Nil means
	// pass-through: the client's key headers are forwarded as they are.
	APIKey func() string
	// Transport sends upstream requests (one shared, tuned transport).
	Transport http.RoundTripper

	MaxRetries     int
	TotalTimeout   time.Duration
	AttemptTimeout time.Duration
	MaxBodyBytes   int64
	// Budget is shared by all requests' buffered bodies; nil reserves nothing.
	Budget *limits.Budget

	KeepaliveAfter    time.Duration
	KeepaliveInterval time.Duration
	InitialBackoff    time.Duration
	MaxBackoff        time.Duration

	// Clock measures the budget and times the waits; Rand returns [0,1)
	// for jitter. Both are injectable for tests.
	Clock clock.WithTicker
	Rand  func() float64

	Delays  DelayReporter
	Metrics Recorder
}

// Proxy serves /v1/*.
type Proxy struct {
	o    Options
	base string
}

// New validates o and returns a Proxy.
func New(o Options) (*Proxy, error) {
	if o.BaseURL == nil || o.BaseURL.Scheme == "" || o.BaseURL.Host == "" {
		return nil, errors.New("anthropic proxy: BaseURL must be an absolute URL")
	}
	if o.Transport == nil {
		return nil, errors.New("anthropic proxy: Transport is required")
	}
	if o.TotalTimeout <= 0 || o.AttemptTimeout <= 0 || o.MaxBodyBytes <= 0 || o.MaxRetries < 0 {
		return nil, errors.New("anthropic proxy: timeouts and body limit must be positive, retries not negative")
	}
	if o.KeepaliveAfter <= 0 {
		o.KeepaliveAfter = DefaultKeepaliveAfter
	}
	if o.KeepaliveInterval <= 0 {
		o.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = DefaultInitialBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.Delays == nil {
		o.Delays = DelayReporterFunc(func(string, int, time.Duration, string) {})
	}
	if o.Metrics == nil {
		o.Metrics = nopRecorder{}
	}
	return &Proxy{o: o, base: strings.TrimSuffix(o.BaseURL.String(), "/")}, nil
}

type nopRecorder struct{}

func (nopRecorder) ObserveAttempt(string, string, time.Duration) {}
func (nopRecorder) ObserveRetry(string, string)                  {}
func (nopRecorder) ObserveDelay(string, time.Duration)           {}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
var readerPool = sync.Pool{New: func() any { return sse.NewReader(nil) }}

// maxEventLine bounds one line of an upstream stream (a delta is a few hundred bytes).
const maxEventLine = 16 << 20

// ServeHTTP proxies one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The body is kept whole so that a retry can send it again; its bytes
	// count against the gateway's budget until the exchange ends.
	held, err := limits.ReadBody(r, p.o.MaxBodyBytes, p.o.Budget)
	switch {
	case errors.Is(err, limits.ErrTooLarge):
		limits.Refuse(w, false)
		WriteError(w, http.StatusRequestEntityTooLarge, ErrRequestTooLarge,
			fmt.Sprintf("request body exceeds the gateway limit of %d bytes", p.o.MaxBodyBytes))
		return
	case errors.Is(err, limits.ErrBudget):
		limits.Refuse(w, true)
		w.Header().Set("X-Should-Retry", "true")
		WriteError(w, http.StatusServiceUnavailable, ErrOverloaded, "gateway busy: too many request bytes in flight, retry shortly")
		return
	case err != nil:
		limits.Refuse(w, false)
		WriteError(w, http.StatusBadRequest, ErrInvalidRequest, "reading request body: "+errorClass(err))
		return
	}
	defer held.Release()
	body := held.Bytes
	stream := false
	if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v1/messages") {
		var probe struct {
			Stream json.RawMessage `json:"stream"`
		}
		if err := json.Unmarshal(body, &probe); err != nil {
			WriteError(w, http.StatusBadRequest, ErrInvalidRequest, "request body is not valid JSON: "+err.Error())
			return
		}
		stream = bytes.Equal(bytes.TrimSpace(probe.Stream), []byte("true"))
	}

	h := r.Header.Clone()
	hop.Remove(h)
	h.Del(TokenHeader)
	h.Del("Host")
	h.Del("Content-Length")
	// The transport negotiates gzip itself and hands us plain bytes, which the
	// stream reader needs.
	h.Del("Accept-Encoding")
	if p.o.APIKey != nil {
		h.Del("Authorization")
		h.Set("X-Api-Key", p.o.APIKey())
	}

	x := &exchange{
		p: p, w: w, r: r, body: body, header: h, stream: stream,
		target: p.base + r.URL.EscapedPath(),
		log:    ctrl.FromContext(r.Context()).WithValues("upstream", Upstream, "path", r.URL.Path),
	}
	if r.URL.RawQuery != "" {
		x.target += "?" + r.URL.RawQuery
	}
	x.run()
}

// exchange is one client request and its upstream attempts.
type exchange struct {
	p      *Proxy
	w      http.ResponseWriter
	r      *http.Request
	body   []byte
	header http.Header
	target string
	stream bool
	log    logr.Logger

	// committed: 200 text/event-stream already went to the client (keepalive).
	committed bool
	// sw writes to the client's event stream once there is one.
	sw *sse.Writer
}

// outcome of one attempt.
type outcome struct {
	res    *http.Response // nil when no response came
	err    error          // transport error when res is nil
	reason string         // retry reason, "" when not retryable
	code   string         // metrics code of a failed attempt
	// errBody is the buffered body of an error response.
	errBody []byte
	// For an SSE response: the frames read while peeking, and the reader
	// positioned after them.
	prelude []byte
	sr      *sse.Reader
	cut     error // the stream broke before content (prelude is all there is)
	ended   bool  // the prelude holds the stream's final event (an error)
	stop    func()
}

func (o *outcome) release() {
	if o.res != nil {
		_ = o.res.Body.Close()
	}
	if o.sr != nil {
		o.sr.Reset(nil)
		readerPool.Put(o.sr)
		o.sr = nil
	}
	if o.stop != nil {
		o.stop()
	}
}

func (x *exchange) run() {
	p := x.p
	clk := p.o.Clock
	deadline := clk.Now().Add(p.o.TotalTimeout)
	if x.log.V(1).Enabled() {
		x.log.V(1).Info("Forwarding to Anthropic", "method", x.r.Method, "stream", x.stream, "headers", headerNames(x.header))
	}
	for attempt := 0; ; attempt++ {
		remaining := deadline.Sub(clk.Now())
		o := x.try(min(p.o.AttemptTimeout, remaining))
		if x.r.Context().Err() != nil {
			o.release()
			x.log.V(1).Info("Client went away")
			return
		}
		if o.reason == "" {
			x.deliver(o)
			return
		}
		wait, ok := x.retryWait(o, attempt, deadline)
		if !ok {
			x.log.V(1).Info("Giving up on Anthropic", "attempt", attempt+1, "reason", o.reason)
			x.deliver(o)
			return
		}
		o.release()
		p.o.Metrics.ObserveRetry(Upstream, o.reason)
		p.o.Metrics.ObserveDelay(Upstream, wait)
		p.o.Delays.ProcessingDelay(Upstream, attempt+1, wait, o.reason)
		x.log.V(1).Info("Retrying Anthropic call", "attempt", attempt+1, "reason", o.reason, "wait", wait.String())
		if !x.sleep(wait) {
			return
		}
	}
}

// retryWait returns the wait before the next attempt, or false to give up:
// no retries left, or the wait would not leave time for another attempt.
func (x *exchange) retryWait(o *outcome, attempt int, deadline time.Time) (time.Duration, bool) {
	p := x.p
	if attempt >= p.o.MaxRetries {
		return 0, false
	}
	now := p.o.Clock.Now()
	var h http.Header
	if o.res != nil {
		h = o.res.Header
	}
	wait, fromServer := retryAfter(h, now)
	if !fromServer {
		wait = backoff(attempt, p.o.InitialBackoff, p.o.MaxBackoff, p.o.Rand)
	}
	if wait >= deadline.Sub(now) {
		return 0, false
	}
	return wait, true
}

// sleep waits d, sending keepalive comments to a streaming client when the
// wait is long. It returns false when the client went away.
func (x *exchange) sleep(d time.Duration) bool {
	clk := x.p.o.Clock
	if x.stream && d >= x.p.o.KeepaliveAfter {
		if !x.committed {
			x.sw = sse.Start(x.w)
			x.committed = true
		}
		x.keepalive()
	}
	t := clk.NewTimer(d)
	defer t.Stop()
	var tick <-chan time.Time
	if x.committed {
		tk := clk.NewTicker(x.p.o.KeepaliveInterval)
		defer tk.Stop()
		tick = tk.C()
	}
	for {
		select {
		case <-x.r.Context().Done():
			return false
		case <-t.C():
			return true
		case <-tick:
			x.keepalive()
		}
	}
}

func (x *exchange) keepalive() {
	_ = x.sw.Comment("keepalive")
	_ = x.sw.Flush()
}

// try makes one attempt within timeout. The timeout covers the response
// head, an error body, and for SSE the events up to the first content block;
// after that only the client's context bounds the response.
func (x *exchange) try(timeout time.Duration) *outcome {
	p := x.p
	ctx, cancel := context.WithCancel(x.r.Context())
	var timedOut atomic.Bool
	timer := time.AfterFunc(max(timeout, 0), func() { timedOut.Store(true); cancel() })
	stop := func() { timer.Stop(); cancel() }
	failed := func(err error) *outcome {
		stop()
		reason, code := ReasonConnection, "error"
		if timedOut.Load() {
			reason, code = ReasonTimeout, "timeout"
		}
		return &outcome{err: err, reason: reason, code: code}
	}

	req, err := http.NewRequestWithContext(ctx, x.r.Method, x.target, bytes.NewReader(x.body))
	if err != nil {
		stop()
		return &outcome{err: err}
	}
	req.Header = x.header
	req.ContentLength = int64(len(x.body))
	if len(x.body) == 0 {
		req.Body = http.NoBody
	}
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(x.body)), nil }

	start := p.o.Clock.Now()
	res, err := p.o.Transport.RoundTrip(req) //nolint:bodyclose // the returned outcome owns the body; outcome.release closes it
	if err != nil {
		o := failed(err)
		p.o.Metrics.ObserveAttempt(Upstream, o.code, p.o.Clock.Since(start))
		x.log.V(1).Info("Anthropic attempt failed", "error", err.Error(), "timedOut", o.reason == ReasonTimeout)
		return o
	}
	p.o.Metrics.ObserveAttempt(Upstream, strconv.Itoa(res.StatusCode), p.o.Clock.Since(start))
	o := &outcome{res: res, stop: stop}

	if res.StatusCode >= 400 {
		b, err := io.ReadAll(io.LimitReader(res.Body, maxErrorBody))
		if err != nil {
			// The body broke: a connection error, unless the server said
			// not to retry.
			o.release()
			f := failed(err)
			if res.Header.Get("X-Should-Retry") == "false" {
				f.reason = ""
			}
			return f
		}
		stop()
		o.errBody = b
		o.reason = retryReason(res.StatusCode, res.Header, b)
		return o
	}
	if !sse.IsStream(res.Header) {
		if reason := retryReason(res.StatusCode, res.Header, nil); reason == ReasonShouldRetry {
			o.reason = reason
		}
		// A success body is streamed as it comes; the attempt timer must not
		// cut it.
		timer.Stop()
		return o
	}
	x.peek(o, &timedOut)
	if o.cut == nil && o.reason == "" {
		timer.Stop()
	}
	return o
}

// peek reads SSE events until the first one that is not message_start, ping
// or a comment. An overloaded_error or a cut before that is retryable.
func (x *exchange) peek(o *outcome, timedOut *atomic.Bool) {
	sr := readerPool.Get().(*sse.Reader)
	sr.Reset(o.res.Body)
	sr.MaxLine = maxEventLine
	o.sr = sr
	for {
		f, err := sr.NextFrame()
		if err != nil {
			// Nothing reached the client: the cut is retryable.
			o.cut = err
			o.reason = ReasonStreamCut
			if timedOut.Load() {
				o.reason = ReasonTimeout
			}
			return
		}
		o.prelude = append(o.prelude, f.Bytes...)
		switch f.Name {
		case "", "message_start", "ping":
			continue
		case "error":
			o.ended = true
			if errorEventType(f.Event.Data) == ErrOverloaded {
				o.reason = ReasonStreamOverload
			}
			return
		default:
			return
		}
	}
}

// deliver sends o to the client: the response as it came (headers filtered)
// or, when the client was already committed to SSE, as SSE.
func (x *exchange) deliver(o *outcome) {
	defer o.release()
	w := x.w
	if o.res == nil {
		// The transport error names the upstream URL and addresses: it goes to
		// the log, the client gets its class.
		status, msg := http.StatusBadGateway, "Anthropic API unreachable ("+errorClass(o.err)+")"
		if o.reason == ReasonTimeout {
			status, msg = http.StatusGatewayTimeout, "Anthropic API did not answer in time"
		}
		x.log.Info("Answering gateway error", "status", status, "error", o.err.Error())
		if x.committed {
			x.writeErrorEvent(ErrorBody(ErrAPI, msg))
			return
		}
		WriteError(w, status, ErrAPI, msg)
		return
	}

	if x.committed {
		switch {
		case o.errBody != nil:
			b := o.errBody
			if _, ok := parseUpstreamError(b); !ok {
				b = ErrorBody(ErrAPI, fmt.Sprintf("Anthropic API answered %d", o.res.StatusCode))
			}
			x.writeErrorEvent(b)
		case o.sr != nil:
			x.pump(o)
		default:
			x.writeErrorEvent(ErrorBody(ErrAPI, "Anthropic API answered a stream request without a stream"))
		}
		return
	}

	h := w.Header()
	for k, vs := range o.res.Header {
		h[k] = vs
	}
	hop.Remove(h)
	switch {
	case o.errBody != nil:
		h.Set("Content-Length", strconv.Itoa(len(o.errBody)))
		w.WriteHeader(o.res.StatusCode)
		_, _ = w.Write(o.errBody)
	case o.sr != nil:
		h.Del("Content-Length")
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(o.res.StatusCode)
		x.sw = sse.ForResponse(w)
		x.pump(o)
	default:
		if o.res.ContentLength < 0 || o.res.Uncompressed {
			h.Del("Content-Length")
		}
		w.WriteHeader(o.res.StatusCode)
		bp := bufPool.Get().(*[]byte)
		_, err := io.CopyBuffer(w, o.res.Body, *bp)
		bufPool.Put(bp)
		if err != nil && x.r.Context().Err() == nil {
			// Abort the client's connection rather than end a truncated body
			// as if it were complete.
			x.log.V(1).Info("Anthropic response body broke", "error", err.Error())
			panic(http.ErrAbortHandler)
		}
	}
}

// pump writes the peeked events, then the rest of the stream event by
// event, flushing each. A cut (or, for a messages stream, an end without
// message_stop) becomes an api_error event.
func (x *exchange) pump(o *outcome) {
	sw := x.sw
	ended := false
	if len(o.prelude) > 0 {
		if sw.Raw(o.prelude) != nil {
			return
		}
		ended = o.ended
		_ = sw.Flush()
	}
	err := o.cut
	if err == nil {
		for {
			var f sse.Frame
			f, err = o.sr.NextFrame()
			if err != nil {
				break
			}
			// Whole frames, as they came: the client never sees half an event.
			if sw.Raw(f.Bytes) != nil {
				return
			}
			if o.sr.Buffered() == 0 {
				_ = sw.Flush()
			}
			if f.Name == "message_stop" || f.Name == "error" {
				ended = true
			}
		}
	}
	_ = sw.Flush()
	if x.r.Context().Err() != nil {
		return
	}
	if errors.Is(err, io.EOF) && (ended || !x.stream) {
		return
	}
	if ended {
		// The stream said it was finished; a broken close after that loses
		// nothing.
		return
	}
	msg := "Anthropic stream ended before message_stop"
	if !errors.Is(err, io.EOF) {
		msg = "Anthropic stream was cut (" + errorClass(err) + ")"
	}
	x.log.V(1).Info("Reporting broken stream to client", "error", err.Error())
	x.writeErrorEvent(ErrorBody(ErrAPI, msg))
}

// writeErrorEvent sends data to the client as an SSE error event.
func (x *exchange) writeErrorEvent(data []byte) {
	if x.sw == nil {
		x.sw = sse.ForResponse(x.w)
	}
	_ = x.sw.Event(sse.Event{Type: "error", Data: string(data)})
	_ = x.sw.Flush()
}

// errorClass names what kind of network failure err is, without the addresses
// and URLs its text carries.
func errorClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	default:
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			return "name resolution failed"
		}
		return "network error"
	}
}

func headerNames(h http.Header) []string {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	return names
}
