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
	"strings"
	"time"

	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/gateway/access"
	"github.com/selfheal-dev/selfheal/internal/gateway/limits"
	"github.com/selfheal-dev/selfheal/internal/sse"
)

// maxEventIDLen bounds a Last-Event-ID: a namespace, a name and a step.
const maxEventIDLen = 63 + 1 + 253 + 1 + 10

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
	lastID := strings.TrimSpace(lastRaw)
	if len(lastID) > maxEventIDLen {
		writeJSONError(w, http.StatusBadRequest, "Last-Event-ID is not an event id of this gateway")
		return
	}
	release, err := h.opts.Streams.Acquire(client.ClientName())
	if err != nil {
		refuseBusy(w, err.Error())
		return
	}
	var sub *Subscription
	var backlog []*Event
	missed := false
	if lastID != "" {
		sub, backlog, missed = h.hub.Resume(filter, lastID)
	} else {
		sub, _, _ = h.hub.Subscribe(filter, 0, false)
	}

	// On HTTP/1.1 the connection is taken over so an idle subscriber costs one small
	// goroutine and its socket, not net/http's per-connection buffers and reader
	// goroutine; the stream then ends by closing the connection.
	if conn, ok := hijack(w, r); ok {
		dc := &deadlineConn{Conn: conn, timeout: h.opts.WriteTimeout}
		sw := &sseWriter{Writer: sse.NewWriter(dc, nil), conn: dc}
		// The response head, written by hand on the taken-over connection: the
		// stream's headers (sse.SetHeaders) and those middlewares set.
		hdr := w.Header().Clone()
		sse.SetHeaders(hdr)
		hdr.Set("Connection", "close")
		var head bytes.Buffer
		head.WriteString("HTTP/1.1 200 OK\r\n")
		_ = hdr.Write(&head) // http.Header.Write drops line breaks from values
		head.WriteString("\r\n")
		_ = sw.Raw(head.Bytes())
		sw.comment("connected")
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
	sw := newSSEWriter(w)
	sw.start(w)
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

func (h *EventsHandler) stream(ctx context.Context, sw *sseWriter, sub *Subscription, backlog []*Event, missed bool, lastID string, release func()) {
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

// sseWriter writes healing events as SSE (package sse) onto a ResponseWriter or a
// hijacked connection.
type sseWriter struct {
	*sse.Writer
	rc     *http.ResponseController // nil on a hijacked connection
	conn   *deadlineConn            // set on a hijacked connection
	lastID string
}

func newSSEWriter(w http.ResponseWriter) *sseWriter {
	return &sseWriter{Writer: sse.ForResponse(w), rc: http.NewResponseController(w)}
}

// start opens the stream on a ResponseWriter: headers, 200, and a first comment so
// the client sees it open.
func (s *sseWriter) start(w http.ResponseWriter) {
	sse.SetHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	s.comment("connected")
}

// deadlineConn bounds each write to a hijacked connection: nobody else watches it, so
// a client that stops reading must not hold the writer forever.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *deadlineConn) Write(b []byte) (int, error) {
	_ = c.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(b)
}

func (s *sseWriter) event(ev *Event) {
	data, err := ev.marshal()
	if err != nil {
		return // an Event always marshals; nothing sensible to send otherwise
	}
	if ev.ID != "" {
		s.lastID = ev.ID
	}
	_ = s.Event(sse.Event{ID: ev.ID, Type: ev.Type, Data: string(data)})
}

// control writes a stream-control event that has no id, so it never moves the
// client's Last-Event-ID.
func (s *sseWriter) control(typ string, data any) {
	b, _ := json.Marshal(data)
	_ = s.Event(sse.Event{Type: typ, Data: string(b)})
}

func (s *sseWriter) comment(text string) { _ = s.Comment(text) }

func (s *sseWriter) flush() error { return s.Flush() }

// final ends a stream the hub closed, telling the client why.
func (s *sseWriter) final(err error, timeout time.Duration) {
	if s.conn != nil {
		s.conn.timeout = timeout
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
	Namespace    string                        `json:"namespace"`
	Service      string                        `json:"service"`
	FailureClass selfhealv1alpha1.FailureClass `json:"failureClass"`
	// Reason is an alias of FailureClass for clients that call it so.
	Reason     selfhealv1alpha1.FailureClass `json:"reason"`
	Message    string                        `json:"message"`
	Upstream   string                        `json:"upstream"`
	HTTPStatus int                           `json:"httpStatus"`
	// Time is when the reporter saw the failure (RFC 3339), optional: a failure seen
	// after the Service's last healing ended is a new incident; without it, a report
	// arriving shortly after a healing ended joins that healing.
	Time *time.Time `json:"time,omitempty"`
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
		Source:     selfhealv1alpha1.TriggerSourceChatAPI,
	}
	if req.Time != nil {
		f.Seen = *req.Time
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
	acceptSSE := sse.PrefersStream(r.Header)
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
	w.Header().Set("X-Healing-Request", name)
	sw := newSSEWriter(w)
	sw.start(w)
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
