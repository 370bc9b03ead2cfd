package limits

import (
	"fmt"
	"sync"
)

// Streams caps long-lived streams (SSE subscribers), in total and per client, so
// neither the whole set of clients nor one of them can hold unbounded goroutines,
// sockets and buffers.
type Streams struct {
	kind      string
	max       int
	perClient int

	mu       sync.Mutex
	total    int
	byClient map[string]int
}

// NewStreams returns a cap of max streams in total and perClient per client name,
// reported in metrics as kind.
func NewStreams(kind string, max, perClient int) *Streams {
	streamsLimit.WithLabelValues(kind, "total").Set(float64(max))
	streamsLimit.WithLabelValues(kind, "per_client").Set(float64(perClient))
	return &Streams{kind: kind, max: max, perClient: perClient, byClient: map[string]int{}}
}

// Acquire takes one stream for client. It returns the release function, or an error
// saying which cap was reached; the caller answers 503 with Retry-After.
func (s *Streams) Acquire(client string) (func(), error) {
	if s == nil {
		return func() {}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total >= s.max {
		Refused(ReasonSubscribers)
		return nil, fmt.Errorf("too many open event streams (the gateway's limit is %d)", s.max)
	}
	if s.byClient[client] >= s.perClient {
		Refused(ReasonClientSubscribers)
		return nil, fmt.Errorf("too many open event streams for this client (the limit is %d per client)", s.perClient)
	}
	s.total++
	s.byClient[client]++
	streams.WithLabelValues(s.kind).Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.total--
			if s.byClient[client]--; s.byClient[client] <= 0 {
				delete(s.byClient, client)
			}
			streams.WithLabelValues(s.kind).Dec()
		})
	}, nil
}

// Open is the number of streams open now.
func (s *Streams) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}
