package healing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/gateway/access"
	"github.com/selfheal-dev/selfheal/internal/gateway/limits"
)

// StreamOptions tunes the SSE handlers. Zero values take the defaults.
type StreamOptions struct {
	// Heartbeat is the interval of SSE comment lines that keep idle streams open
	// through proxies. Default 15s.
	Heartbeat time.Duration
	// FinalWriteTimeout bounds the write of the last event to a dropped or closing
	// subscriber. Default 2s.
	FinalWriteTimeout time.Duration
	// WriteTimeout bounds one write to a subscriber. Default 30s.
	WriteTimeout time.Duration
	// Clock drives heartbeats; tests inject a fake one.
	Clock clock.WithTicker
	// MaxBodyBytes limits POST /v1/healing-requests bodies. Default 64 KiB.
	MaxBodyBytes int64
	// Budget is the gateway's budget of buffered request bytes; nil reserves nothing.
	Budget *limits.Budget
	// Streams caps open event streams, in total and per client; nil is no cap.
	Streams *limits.Streams
}

func (o *StreamOptions) defaults() {
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.FinalWriteTimeout <= 0 {
		o.FinalWriteTimeout = 2 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 64 << 10
	}
}

// EventsHandler serves GET /v1/healing/events: the hub's events as SSE, filtered by
// ?service=, ?namespace= and ?request=, resumable with Last-Event-ID.
type EventsHandler struct {
	hub  *Hub
	opts StreamOptions
}

// NewEventsHandler returns the events endpoint for hub.
func NewEventsHandler(hub *Hub, opts StreamOptions) *EventsHandler {
	opts.defaults()
	return &EventsHandler{hub: hub, opts: opts}
}

func (h *EventsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeJSONError(w, http.StatusMethodNotAllowed, "method not allowed: use GET")
		return
	}
	q := r.URL.Query()
	client := access.FromContext(r.Context())
	filter := Filter{Namespace: q.Get("namespace"), Service: q.Get("service"), Request: q.Get("request"), Client: client}
	if filter.Namespace != "" && !client.AllowsNamespace(filter.Namespace) {
		refuse(w, http.StatusForbidden, fmt.Sprintf("namespace %q is outside this client's scope", filter.Namespace))
		return
	}
	lastRaw := r.Header.Get("Last-Event-ID")
	if lastRaw == "" {
		lastRaw = q.Get("lastEventId")
	}
	var lastID uint64
	resume := false
	if lastRaw != "" {
		id, err := strconv.ParseUint(strings.TrimSpace(lastRaw), 10, 64)
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, "Last-Event-ID must be an event id (a decimal number)")
			return
		}
		lastID, resume = id, true
	}
	release, err := h.opts.Streams.Acquire(client.ClientName())
	if err != nil {
		refuseBusy(w, err.Error())
		return
	}
	sub, backlog, missed := h.hub.Subscribe(filter, lastID, resume)

	// On HTTP/1.1 the connection is taken over so an idle subscriber costs one small
	// goroutine and its socket, not net/http's per-connection buffers and reader
	// goroutine; the stream then ends by closing the connection.
	sw := newSSEWriter(w)
	if conn, ok := hijack(w, r); ok {
		sw = &sseWriter{conn: conn, wto: h.opts.WriteTimeout}
		sw.buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n")
		for k, vs := range w.Header() {
			if k == "Content-Type" || k == "Cache-Control" || k == "Connection" || k == "X-Accel-Buffering" {
				continue
			}
			for _, v := range vs {
				sw.buf.WriteString(k + ": " + strings.NewReplacer("\r", "", "\n", "").Replace(v) + "\r\n")
			}
		}
		sw.buf.WriteString("\r\n: connected\n\n")
		sw.drain()
		// A reader notices at once when the client goes away.
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			var b [1]byte
			for {
				if _, err := conn.Read(b[:]); err != nil {
					cancel()
					return
				}
			}
		}()
		go h.stream(ctx, sw, sub, backlog, missed, lastID, release)
		return
	}
	sw.start()
	h.stream(r.Context(), sw, sub, backlog, missed, lastID, release)
}

// refuse answers a request whose body is not read, closing the connection.
func refuse(w http.ResponseWriter, status int, msg string) {
	limits.Refuse(w, false)
	writeJSONError(w, status, msg)
}

// refuseBusy answers 503 with Retry-After for a limit that was reached.
func refuseBusy(w http.ResponseWriter, msg string) {
	limits.Refuse(w, true)
	writeJSONError(w, http.StatusServiceUnavailable, msg)
}

// hijack takes over an HTTP/1.x connection; it declines on HTTP/2 and when a
// middleware's writer cannot unwrap to one that hijacks.
func hijack(w http.ResponseWriter, r *http.Request) (net.Conn, bool) {
	if r.ProtoMajor != 1 {
		return nil, false
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, false
	}
	if brw.Writer.Buffered() > 0 {
		if err := brw.Flush(); err != nil {
			_ = conn.Close()
			return nil, false
		}
	}
	return conn, true
}

func (h *EventsHandler) stream(ctx context.Context, sw *sseWriter, sub *Subscription, backlog []*Event, missed bool, lastID uint64, release func()) {
	defer release()
	defer sub.Close()
	if sw.conn != nil {
		defer func() { _ = sw.conn.Close() }()
	}
	if missed {
		sw.control(EventMissed, map[string]any{
			"lastEventId": lastID,
			"message":     "some events after Last-Event-ID are no longer kept; reload the current state",
		})
	}
	for _, ev := range backlog {
		sw.event(ev)
	}
	if err := sw.flush(); err != nil {
		return
	}
	h.pump(ctx, sw, sub)
}

// pump writes subscription events until the client leaves or the subscription ends.
func (h *EventsHandler) pump(ctx context.Context, sw *sseWriter, sub *Subscription) {
	ticker := h.opts.Clock.NewTicker(h.opts.Heartbeat)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
			sw.comment("heartbeat")
			if sw.flush() != nil {
				return
			}
		case ev, ok := <-sub.Events():
			if !ok {
				sw.final(sub.Err(), h.opts.FinalWriteTimeout)
				return
			}
			sw.event(ev)
			// Write what is already queued before flushing once.
			for more := true; more; {
				select {
				case ev, ok = <-sub.Events():
					if !ok {
						sw.final(sub.Err(), h.opts.FinalWriteTimeout)
						return
					}
					sw.event(ev)
				default:
					more = false
				}
			}
			if sw.flush() != nil {
				return
			}
		}
	}
}

// sseWriter formats Server-Sent Events onto a ResponseWriter or a hijacked connection.
type sseWriter struct {
	w      http.ResponseWriter // nil on a hijacked connection
	rc     *http.ResponseController
	conn   net.Conn // set on a hijacked connection
	wto    time.Duration
	lastID uint64
	buf    bytes.Buffer
	err    error
}

func newSSEWriter(w http.ResponseWriter) *sseWriter {
	return &sseWriter{w: w, rc: http.NewResponseController(w)}
}

func (s *sseWriter) start() {
	hdr := s.w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	hdr.Set("Connection", "keep-alive")
	s.w.WriteHeader(http.StatusOK)
	s.comment("connected")
}

func (s *sseWriter) event(ev *Event) {
	data, err := json.Marshal(ev)
	if err != nil {
		return // an Event always marshals; nothing sensible to send otherwise
	}
	if ev.ID != 0 {
		s.lastID = ev.ID
		s.buf.WriteString("id: ")
		s.buf.WriteString(strconv.FormatUint(ev.ID, 10))
		s.buf.WriteByte('\n')
	}
	s.buf.WriteString("event: ")
	s.buf.WriteString(ev.Type)
	s.buf.WriteString("\ndata: ")
	s.buf.Write(data)
	s.buf.WriteString("\n\n")
	s.drain()
}

// control writes a stream-control event that has no id, so it never moves the
// client's Last-Event-ID.
func (s *sseWriter) control(typ string, data any) {
	b, _ := json.Marshal(data)
	s.buf.WriteString("event: ")
	s.buf.WriteString(typ)
	s.buf.WriteString("\ndata: ")
	s.buf.Write(b)
	s.buf.WriteString("\n\n")
	s.drain()
}

func (s *sseWriter) comment(text string) {
	s.buf.WriteString(": ")
	s.buf.WriteString(text)
	s.buf.WriteString("\n\n")
	s.drain()
}

// drain moves the formatted bytes to the connection without keeping a per-subscriber
// buffer alive between events.
func (s *sseWriter) drain() {
	if s.err == nil {
		if s.conn != nil {
			// Nobody else watches a hijacked connection: a client that stops reading
			// must not hold this goroutine forever.
			_ = s.conn.SetWriteDeadline(time.Now().Add(s.wto))
			_, s.err = s.conn.Write(s.buf.Bytes())
		} else {
			_, s.err = s.w.Write(s.buf.Bytes())
		}
	}
	s.buf.Reset()
	if s.buf.Cap() > 4096 {
		s.buf = bytes.Buffer{}
	}
}

func (s *sseWriter) flush() error {
	if s.err != nil || s.conn != nil {
		return s.err
	}
	return s.rc.Flush()
}

// final ends a stream the hub closed, telling the client why.
func (s *sseWriter) final(err error, timeout time.Duration) {
	if s.conn != nil {
		s.wto = timeout
	} else {
		_ = s.rc.SetWriteDeadline(time.Now().Add(timeout))
	}
	switch {
	case errors.Is(err, ErrSlowSubscriber):
		s.control(EventDropped, map[string]any{
			"reason":      "slow consumer: too many undelivered events",
			"lastEventId": s.lastID,
			"message":     "reconnect with Last-Event-ID to resume",
		})
	case errors.Is(err, ErrHubClosed):
		s.control(EventShutdown, map[string]any{
			"reason":      "gateway shutting down",
			"lastEventId": s.lastID,
			"message":     "reconnect with Last-Event-ID to resume",
		})
	default:
		return
	}
	_ = s.flush()
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// ReportRequest is the body of POST /v1-healing-requests.
type ReportRequest struct {
	Namespace    string                `json:"namespace"`
	Service      string                `json:"service"`
	FailureClass v1alpha1.FailureClass `json:"failureClass"`
	// Reason is an alias of FailureClass for clients that call it so.
	Reason     v1alpha1.FailureClass `json:"reason"`
	Message    string                `json:"message"`
	Upstream   string                `json:"upstream"`
	HTTPStatus int                   `json:"httpStatus"`
}

// ReportResponse answers a report when the client asked for JSON.
type ReportResponse struct {
	Request   string `json:"request"`
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	Events    string `json:"events"`
}

// Trigger is what the report endpoint needs from a Healer.
type Trigger interface {
	Trigger(ctx context.Context, f Failure) (string, error)
	Follow(ctx context.Context, namespace, request string, replay bool) <-chan Event
}

// ReportHandler serves POST /v1/healing-requests: a chat backend reports a failure and
// gets the healing's events back as SSE (or 202 with the request name when it accepts
// only JSON).
type ReportHandler struct {
	healer Trigger
	opts   StreamOptions
}

// NewReportHandler returns the report endpoint.
func NewReportHandler(healer Trigger, opts StreamOptions) *ReportHandler {
	opts.defaults()
	return &ReportHandler{healer: healer, opts: opts}
}

func (h *ReportHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSONError(w, http.StatusMethodNotAllowed, "method not allowed: use POST")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			writeJSONError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
			return
		}
	}
	held, err := limits.ReadBody(r, h.opts.MaxBodyBytes, h.opts.Budget)
	switch {
	case errors.Is(err, limits.ErrTooLarge):
		refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", h.opts.MaxBodyBytes))
		return
	case errors.Is(err, limits.ErrBudget):
		refuseBusy(w, err.Error())
		return
	case err != nil:
		refuse(w, http.StatusBadRequest, "reading body failed")
		return
	}
	defer held.Release()
	var req ReportRequest
	dec := json.NewDecoder(bytes.NewReader(held.Bytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
		return
	}
	if dec.More() {
		writeJSONError(w, http.StatusBadRequest, "malformed JSON: trailing data after the object")
		return
	}
	class := req.FailureClass
	if class == "" {
		class = req.Reason
	}
	var missing []string
	if req.Namespace == "" {
		missing = append(missing, "namespace")
	}
	if req.Service == "" {
		missing = append(missing, "service")
	}
	if class == "" {
		missing = append(missing, "failureClass (or reason)")
	}
	if len(missing) > 0 {
		writeJSONError(w, http.StatusBadRequest, "missing fields: "+strings.Join(missing, ", "))
		return
	}
	f := Failure{
		Namespace:  req.Namespace,
		Service:    req.Service,
		Upstream:   req.Upstream,
		Class:      class,
		HTTPStatus: req.HTTPStatus,
		Message:    req.Message,
		Source:     v1alpha1.TriggerSourceChatAPI,
	}
	if err := f.Validate(); err != nil {
		writeJSONError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	target := access.Target{Namespace: f.Namespace, Service: f.Service}
	if client := access.FromContext(r.Context()); !client.AllowsTarget(target) {
		writeJSONError(w, http.StatusForbidden, fmt.Sprintf("service %q in namespace %q is outside the scope of client %q", f.Service, f.Namespace, client.ClientName()))
		return
	}
	acceptSSE := acceptsSSE(r)
	release := func() {}
	if acceptSSE {
		// Take the stream before creating anything: a refused report changes nothing.
		if release, err = h.opts.Streams.Acquire(access.FromContext(r.Context()).ClientName()); err != nil {
			refuseBusy(w, err.Error())
			return
		}
	}
	defer release()
	log := ctrl.LoggerFrom(r.Context()).WithValues("namespace", f.Namespace, "service", f.Service)
	name, err := h.healer.Trigger(r.Context(), f)
	switch {
	case errors.Is(err, ErrOutOfScope):
		writeJSONError(w, http.StatusForbidden, err.Error())
		return
	case errors.Is(err, ErrInvalidFailure):
		writeJSONError(w, http.StatusUnprocessableEntity, err.Error())
		return
	case err != nil:
		// The cause (API server addresses, RBAC) is for the operator's log.
		log.Info("Healing unavailable for a reported failure", "error", err.Error())
		limits.Refuse(w, true)
		writeJSONError(w, http.StatusServiceUnavailable, "healing unavailable: the gateway cannot create HealingRequests now (see the gateway log)")
		return
	}
	if !acceptSSE {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", "/v1/healing/events?request="+name)
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(ReportResponse{
			Request: name, Namespace: f.Namespace, Service: f.Service,
			Events: "/v1/healing/events?request=" + name,
		})
		return
	}
	sw := newSSEWriter(w)
	sw.w.Header().Set("X-Healing-Request", name)
	sw.start()
	if sw.flush() != nil {
		return
	}
	ctx := r.Context()
	events := h.healer.Follow(ctx, f.Namespace, name, true)
	ticker := h.opts.Clock.NewTicker(h.opts.Heartbeat)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
			sw.comment("heartbeat")
			if sw.flush() != nil {
				return
			}
		case ev, ok := <-events:
			if !ok {
				return
			}
			sw.event(&ev)
			if sw.flush() != nil {
				return
			}
			if ev.Terminal() {
				return
			}
		}
	}
}

// acceptsSSE is false only when the client asked for JSON and not for event streams.
func acceptsSSE(r *http.Request) bool {
	accept := strings.Join(r.Header.Values("Accept"), ",")
	if accept == "" {
		return true
	}
	sse, json := false, false
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "text/event-stream", "*/*", "text/*":
			sse = true
		case "application/json":
			json = true
		}
	}
	return sse || !json
}
