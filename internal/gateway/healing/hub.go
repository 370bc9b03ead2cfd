// Package healing connects the gateway to the healing engine: it creates or joins
// HealingRequests when in-cluster calls fail, learns their progress by watching them,
// and fans that progress out to SSE subscribers through an in-process event hub.
package healing

import (
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
	ID          uint64           `json:"id"`
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

// Publish assigns the next ID to e, keeps it for resume and offers it to every matching
// subscriber. It returns the published event.
func (h *Hub) Publish(e Event) Event {
	if e.Time.IsZero() {
		e.Time = h.clock.Now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return e
	}
	h.nextID++
	e.ID = h.nextID
	ev := &e
	if len(h.ring) < cap(h.ring) {
		h.ring = append(h.ring, ev)
	} else {
		h.ring[h.head] = ev
		h.head = (h.head + 1) % len(h.ring)
	}
	for s := range h.subs {
		if !s.filter.matches(ev) {
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

// LastID is the ID of the newest event, 0 when none was published.
func (h *Hub) LastID() uint64 {
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
// after lastID that are still kept are returned as backlog, atomically with the
// registration so nothing is lost or repeated; missed is true when some events after
// lastID are no longer kept.
func (h *Hub) Subscribe(f Filter, lastID uint64, resume bool) (s *Subscription, backlog []*Event, missed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s = &Subscription{hub: h, filter: f, ch: make(chan *Event, h.bufferSize)}
	if h.closed {
		s.err = ErrHubClosed
		close(s.ch)
		return s, nil, false
	}
	if resume && lastID < h.nextID {
		oldest := h.nextID - uint64(len(h.ring)) + 1
		missed = lastID+1 < oldest
		for i := range h.ring {
			ev := h.ring[(h.head+i)%len(h.ring)]
			if ev.ID > lastID && f.matches(ev) {
				backlog = append(backlog, ev)
			}
		}
	}
	h.subs[s] = struct{}{}
	return s, backlog, missed
}

// Subscription is one subscriber's bounded queue.
type Subscription struct {
	hub    *Hub
	filter Filter
	ch     chan *Event
	err    error // set before ch is closed
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
