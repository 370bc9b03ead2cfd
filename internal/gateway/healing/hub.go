// Package healing connects the gateway to the healing engine: it creates or joins
// HealingRequests when in-cluster calls fail, learns their progress by watching them,
// and fans that progress out to SSE subscribers through an in-process event hub.
package healing

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/selfheal-dev/selfheal/internal/gateway/access"
)

// Event types, as they appear in the SSE `event:` field.
const (
	EventHealingStart    = "healing_start"
	EventHealingProgress = "healing_progress"
	EventHealingComplete = "healing_complete"
	EventHealingFailed   = "healing_failed"
	EventProcessingDelay = "processing_delay"
)

// Stream-control event types: they end or annotate one subscriber's stream and are not
// stored in the hub.
const (
	// EventDropped ends the stream of a subscriber that fell behind.
	EventDropped = "dropped"
	// EventShutdown ends every stream when the gateway stops.
	EventShutdown = "shutdown"
	// EventMissed says that events between Last-Event-ID and the oldest kept one are gone.
	EventMissed = "events_missed"
)

// FindingSummary is one non-passing diagnostic finding, as shown to clients.
type FindingSummary struct {
	Check   string `json:"check"`
	Result  string `json:"result"`
	Message string `json:"message"`
}

// Event is one step of a healing (or a Claude processing delay). Events are immutable
// once published: the hub shares one value among all subscribers.
type Event struct {
	// ID is the SSE event id, derived from the HealingRequest (see EventID), so that
	// every gateway replica gives one step of one healing the same id and a client can
	// resume with Last-Event-ID on any of them. Empty for events that belong to no
	// healing (processing_delay), which are not resumed.
	ID string `json:"id,omitempty"`
	// Seq is this process's publication order (the hub's ring, in-process followers).
	Seq         uint64           `json:"-"`
	Type        string           `json:"type"`
	Request     string           `json:"request,omitempty"`
	Namespace   string           `json:"namespace,omitempty"`
	Service     string           `json:"service,omitempty"`
	Upstream    string           `json:"upstream,omitempty"`
	Phase       string           `json:"phase,omitempty"`
	Message     string           `json:"message,omitempty"`
	Time        time.Time        `json:"time"`
	Issue       string           `json:"issue,omitempty"`
	Reason      string           `json:"reason,omitempty"`
	DuplicateOf string           `json:"duplicateOf,omitempty"`
	Findings    []FindingSummary `json:"findings,omitempty"`
	Attempt     int              `json:"attempt,omitempty"`
	WaitMillis  int64            `json:"waitMs,omitempty"`
	// replayed marks an event this process published from a request's state when it
	// started (its watch's initial list), not as it happened: among other requests'
	// events its place is the list's order, not the healings'.
	replayed bool

	// encoded is the event's JSON, made once by Publish for every subscriber's stream.
	encoded []byte
}

// marshal is the event's JSON.
func (e *Event) marshal() ([]byte, error) {
	if e.encoded != nil {
		return e.encoded, nil
	}
	return json.Marshal(e)
}

// Terminal reports whether the event ends a healing.
func (e *Event) Terminal() bool {
	return e.Type == EventHealingComplete || e.Type == EventHealingFailed
}

// Filter selects events for a subscriber; empty fields match everything.
type Filter struct {
	Namespace string
	Service   string
	Request   string
	// Client limits the events to the healings the client may see. A scoped
	// client sees no processing_delay events: they belong to no healing and
	// would tell it about other clients' calls.
	Client *access.Client
}

func (f Filter) matches(e *Event) bool {
	if f.Client.Scoped() && (e.Namespace == "" || !f.Client.AllowsTarget(access.Target{Namespace: e.Namespace, Service: e.Service})) {
		return false
	}
	return (f.Namespace == "" || f.Namespace == e.Namespace) &&
		(f.Service == "" || f.Service == e.Service) &&
		(f.Request == "" || f.Request == e.Request)
}

// HubOptions sizes the hub. Zero values take the defaults.
type HubOptions struct {
	// RingSize is how many recent events are kept for Last-Event-ID resume.
	RingSize int
	// BufferSize is how many undelivered events one subscriber may have before it is
	// dropped.
	BufferSize int
	// Clock stamps events that carry no time.
	Clock clock.PassiveClock
}

const (
	defaultRingSize   = 1024
	defaultBufferSize = 64
)

// Hub fans events out to subscribers. Publish never blocks on a subscriber: one whose
// buffer is full is dropped, and learns so from Subscription.Err.
type Hub struct {
	clock      clock.PassiveClock
	bufferSize int

	mu     sync.Mutex
	nextID uint64
	ring   []*Event // circular, len == cap once full
	head   int      // index of the oldest event once the ring is full
	subs   map[*Subscription]struct{}
	closed bool
}

// NewHub returns an empty hub.
func NewHub(opts HubOptions) *Hub {
	if opts.RingSize <= 0 {
		opts.RingSize = defaultRingSize
	}
	if opts.BufferSize <= 0 {
		opts.BufferSize = defaultBufferSize
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &Hub{
		clock:      opts.Clock,
		bufferSize: opts.BufferSize,
		ring:       make([]*Event, 0, opts.RingSize),
		subs:       map[*Subscription]struct{}{},
	}
}

// Publish assigns the next Seq to e, keeps it for resume and offers it to every
// matching subscriber. It returns the published event.
func (h *Hub) Publish(e Event) Event {
	if e.Time.IsZero() {
		e.Time = h.clock.Now()
	}
	shared := e
	shared.encoded, _ = json.Marshal(e) // an Event always marshals; without it each stream does
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return e
	}
	h.nextID++
	e.Seq = h.nextID
	shared.Seq = e.Seq
	ev := &shared
	if len(h.ring) < cap(h.ring) {
		h.ring = append(h.ring, ev)
	} else {
		h.ring[h.head] = ev
		h.head = (h.head + 1) % len(h.ring)
	}
	for s := range h.subs {
		if !s.filter.matches(ev) || s.skip.covers(ev) {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			// The subscriber is behind: drop it rather than wait for it.
			h.removeLocked(s, ErrSlowSubscriber)
		}
	}
	return e
}

// ProcessingDelay publishes that a call to upstream waits before retry attempt.
func (h *Hub) ProcessingDelay(upstream string, attempt int, wait time.Duration, reason string) {
	h.Publish(Event{
		Type:       EventProcessingDelay,
		Upstream:   upstream,
		Attempt:    attempt,
		WaitMillis: wait.Milliseconds(),
		Message:    reason,
	})
}

// Subscribers is the number of live subscriptions.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// LastSeq is the Seq of the newest event, 0 when none was published.
func (h *Hub) LastSeq() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.nextID
}

// Close ends every subscription with ErrHubClosed; later Publish calls are ignored.
// Wire it to http.Server.RegisterOnShutdown so SSE clients get a final event.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		h.removeLocked(s, ErrHubClosed)
	}
}

func (h *Hub) removeLocked(s *Subscription, err error) {
	if _, ok := h.subs[s]; !ok {
		return
	}
	delete(h.subs, s)
	s.err = err
	close(s.ch)
}

// Subscribe registers a subscriber for events matching f. When resume is true, events
// after Seq lastSeq that are still kept are returned as backlog, atomically with the
// registration so nothing is lost or repeated; missed is true when some events after
// lastSeq are no longer kept. (In-process followers; SSE clients use Resume.)
func (h *Hub) Subscribe(f Filter, lastID uint64, resume bool) (s *Subscription, backlog []*Event, missed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s = h.register(f); s.err != nil {
		return s, nil, false
	}
	if resume && lastID < h.nextID {
		oldest := h.nextID - uint64(len(h.ring)) + 1
		missed = lastID+1 < oldest
		for i := range h.ring {
			ev := h.ring[(h.head+i)%len(h.ring)]
			if ev.Seq > lastID && f.matches(ev) {
				backlog = append(backlog, ev)
			}
		}
	}
	return s, backlog, missed
}

// Resume registers a subscriber for events matching f that continues a stream the
// client read up to the event lastEventID, read from this gateway or another replica:
// event ids are derived from the HealingRequests, the same on every replica.
//
// The backlog is what this hub kept after that event. Within one namespace every
// replica keeps events in the same order (its watch's order), so the resume is exact
// there; events of the client's last request at or before its last event are never
// sent again, even when this replica sees them later than the client did. missed is
// true when the event and its request's earlier ones are no longer kept here (or the
// id is not one of a healing): the backlog is then everything kept.
func (h *Hub) Resume(f Filter, lastEventID string) (s *Subscription, backlog []*Event, missed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s = h.register(f); s.err != nil {
		return s, nil, false
	}
	cur, ok := ParseEventID(lastEventID)
	if ok {
		s.skip = &cur
	}
	n := len(h.ring)
	at := func(i int) *Event { return h.ring[(h.head+i)%n] }
	pos := -1
	for i := range n {
		if ok && at(i).ID == lastEventID {
			pos = i
		}
	}
	if pos < 0 && ok {
		// This replica has not seen that event yet: continue after the request's
		// latest event the client also had.
		for i := range n {
			if id, idOK := ParseEventID(at(i).ID); idOK && id.sameRequest(cur) && id.Step <= cur.Step {
				pos = i
			}
		}
	}
	missed = pos < 0
	for i := pos + 1; i < n; i++ {
		ev := at(i)
		// Another request's replayed events are not after the client's last one in
		// time, only in this ring: they are not part of its resume.
		if ok && ev.replayed && !cur.sameRequest(eventIDOf(ev)) {
			continue
		}
		if f.matches(ev) && !s.skip.covers(ev) {
			backlog = append(backlog, ev)
		}
	}
	return s, backlog, missed
}

// register adds a subscriber for f, or returns it already ended when the hub is
// closed. The caller holds h.mu, and computes its backlog under the same lock.
func (h *Hub) register(f Filter) *Subscription {
	s := &Subscription{hub: h, filter: f, ch: make(chan *Event, h.bufferSize)}
	if h.closed {
		s.err = ErrHubClosed
		close(s.ch)
		return s
	}
	h.subs[s] = struct{}{}
	return s
}

// Subscription is one subscriber's bounded queue.
type Subscription struct {
	hub    *Hub
	filter Filter
	// skip is the client's resume point: events of that request at or before it
	// are not sent.
	skip *EventID
	ch   chan *Event
	err  error // set before ch is closed
}

// Events delivers events; it is closed when the subscription ends, after which Err
// says why.
func (s *Subscription) Events() <-chan *Event { return s.ch }

// Err is why the subscription ended: ErrSlowSubscriber, ErrHubClosed, or nil when the
// subscriber closed it (or it is still open). Call it after Events is closed.
func (s *Subscription) Err() error {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.err
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.removeLocked(s, nil)
}

// Steps of a healing's events that are not progress entries, in EventID.Step.
const (
	// StepStart is the healing_start event.
	StepStart = 0
	// stepDuplicate and stepEnd follow every progress entry.
	stepDuplicate = math.MaxInt32 - 1
	stepEnd       = math.MaxInt32
)

// EventID identifies one event of one healing on every replica: its HealingRequest and
// its step, 0 for healing_start, n for the n-th progress entry, then "dup" for the
// notice that it defers to another request and "end" for its outcome. As text:
// "namespace/name/step" (namespaces and names hold no "/").
type EventID struct {
	Namespace, Name string
	Step            int
}

func (id EventID) String() string {
	step := strconv.Itoa(id.Step)
	switch id.Step {
	case stepDuplicate:
		step = "dup"
	case stepEnd:
		step = "end"
	}
	return id.Namespace + "/" + id.Name + "/" + step
}

func (id EventID) sameRequest(o EventID) bool {
	return id.Namespace == o.Namespace && id.Name == o.Name
}

// covers reports whether ev is at or before the resume point id (nil covers nothing).
func (id *EventID) covers(ev *Event) bool {
	if id == nil || ev.ID == "" {
		return false
	}
	e, ok := ParseEventID(ev.ID)
	return ok && e.sameRequest(*id) && e.Step <= id.Step
}

// ParseEventID reads an EventID; ok is false for anything else (such as the numeric
// ids of older gateways).
func ParseEventID(s string) (EventID, bool) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return EventID{}, false
	}
	id := EventID{Namespace: parts[0], Name: parts[1]}
	switch parts[2] {
	case "dup":
		id.Step = stepDuplicate
	case "end":
		id.Step = stepEnd
	default:
		n, err := strconv.Atoi(parts[2])
		if err != nil || n < 0 || n >= stepDuplicate {
			return EventID{}, false
		}
		id.Step = n
	}
	return id, true
}

// eventIDOf is ev's id as an EventID; the zero EventID when it has none.
func eventIDOf(ev *Event) EventID {
	id, _ := ParseEventID(ev.ID)
	return id
}

func eventID(namespace, name string, step int) string {
	return EventID{Namespace: namespace, Name: name, Step: step}.String()
}
