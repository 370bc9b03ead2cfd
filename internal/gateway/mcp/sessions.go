package mcp

import (
	"container/list"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/selfheal-dev/selfheal/internal/gateway/limits"
)

// maxRememberedInitialize bounds the initialize request a session keeps for
// re-creating itself upstream. Real ones are a few hundred bytes; a larger one is
// proxied but its session is not remembered (it cannot be recovered).
const maxRememberedInitialize = 8 << 10

type sessionKey struct{ upstream, clientID string }

// sessionStore remembers MCP sessions, bounded in number (least recently used
// forgotten first) and in idle time. Forgetting a session only loses the ability
// to re-create it upstream after a restart: the client then gets the upstream's
// 404 and re-initializes, as the MCP transport specifies.
type sessionStore struct {
	max   int
	ttl   time.Duration
	clock clock.PassiveClock

	mu    sync.Mutex
	lru   *list.List // of *session, most recently used first
	byKey map[sessionKey]*list.Element
}

func newSessionStore(max int, ttl time.Duration, clk clock.PassiveClock) *sessionStore {
	limits.SessionsLimit(max)
	return &sessionStore{max: max, ttl: ttl, clock: clk, lru: list.New(), byKey: map[sessionKey]*list.Element{}}
}

// get returns the session and marks it used, or nil when unknown or idle too long.
func (s *sessionStore) get(upstream, clientID string) *session {
	if clientID == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	s.expireLocked(now)
	e, ok := s.byKey[sessionKey{upstream, clientID}]
	if !ok {
		return nil
	}
	sess := e.Value.(*session)
	sess.lastUsed = now
	s.lru.MoveToFront(e)
	return sess
}

// put remembers sess (replacing one with the same key), then forgets the least
// recently used sessions over the cap.
func (s *sessionStore) put(upstream string, sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	sess.key = sessionKey{upstream, sess.clientID}
	sess.lastUsed = now
	if e, ok := s.byKey[sess.key]; ok {
		s.lru.Remove(e)
	}
	s.byKey[sess.key] = s.lru.PushFront(sess)
	for s.lru.Len() > s.max {
		s.removeLocked(s.lru.Back(), "capacity")
	}
	s.expireLocked(now)
	limits.SetSessions(s.lru.Len())
}

func (s *sessionStore) remove(upstream, clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byKey[sessionKey{upstream, clientID}]; ok {
		s.removeLocked(e, "")
	}
}

func (s *sessionStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}

// expireLocked forgets sessions idle longer than ttl: they sit at the back.
func (s *sessionStore) expireLocked(now time.Time) {
	for e := s.lru.Back(); e != nil && now.Sub(e.Value.(*session).lastUsed) > s.ttl; e = s.lru.Back() {
		s.removeLocked(e, "idle")
	}
}

func (s *sessionStore) removeLocked(e *list.Element, evicted string) {
	sess := s.lru.Remove(e).(*session)
	delete(s.byKey, sess.key)
	if evicted != "" {
		limits.SessionEvicted(evicted)
	}
	limits.SetSessions(s.lru.Len())
}
