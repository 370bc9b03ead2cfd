package healing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// requestState is what this process has published for one HealingRequest, so that each
// progress entry is published once.
type requestState struct {
	service     string
	started     bool
	seen        int // progress entries published, counted since the first one seen
	last        *selfhealv1alpha1.ProgressEntry
	duplicateOf string
	terminal    *Event // the published terminal event, once there is one
	// deadline is the request's status.deadline (zero until a controller set it);
	// latest is the request as last seen, for the diagnosis of a wait that ends at
	// the deadline. Informer objects are shared and never modified.
	deadline time.Time
	latest   *selfhealv1alpha1.HealingRequest
}

// NewInformerCache builds a cache that watches HealingRequests in namespaces (all
// namespaces when empty), for a gateway that runs without the manager's cache. Start it
// with Start(ctx) in a goroutine.
func NewInformerCache(cfg *rest.Config, namespaces []string) (cache.Cache, error) {
	scheme := runtime.NewScheme()
	if err := selfhealv1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("registering the selfheal API: %w", err)
	}
	opts := cache.Options{Scheme: scheme}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	c, err := cache.New(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("creating the HealingRequest cache: %w", err)
	}
	return c, nil
}

// Start watches HealingRequests through informers (the manager's cache, or one from
// NewInformerCache) and publishes their progress to the hub. It does not block; healing
// becomes available once the informer has synced.
func (h *Healer) Start(ctx context.Context, informers cache.Informers) error {
	inf, err := informers.GetInformer(ctx, &selfhealv1alpha1.HealingRequest{}, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("getting the HealingRequest informer: %w", err)
	}
	log := ctrl.LoggerFrom(ctx).WithName("healing-watch")
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, initial bool) {
			if hr, ok := obj.(*selfhealv1alpha1.HealingRequest); ok {
				h.observe(hr, initial)
			}
		},
		UpdateFunc: func(_, obj any) {
			if hr, ok := obj.(*selfhealv1alpha1.HealingRequest); ok {
				h.observe(hr, false)
			}
		},
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if hr, ok := obj.(*selfhealv1alpha1.HealingRequest); ok {
				h.forget(hr)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watching HealingRequests: %w", err)
	}
	h.mu.Lock()
	h.synced = reg.HasSynced
	h.mu.Unlock()
	log.V(1).Info("Watching HealingRequests")
	return nil
}

func stateKey(namespace, name string) string { return namespace + "/" + name }

// observe publishes what is new in hr since this process last saw it.
func (h *Healer) observe(hr *selfhealv1alpha1.HealingRequest, initial bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	key := stateKey(hr.Namespace, hr.Name)
	st := h.states[key]
	targetKey := hr.Namespace + "/" + hr.Spec.Target.Service
	if st == nil {
		st = &requestState{service: hr.Spec.Target.Service}
		h.states[key] = st
	}
	st.latest = hr
	var deadline time.Time
	if hr.Status.Deadline != nil {
		deadline = hr.Status.Deadline.Time
	}
	if !deadline.Equal(st.deadline) {
		st.deadline = deadline
		close(h.deadlines) // waiters re-time themselves
		h.deadlines = make(chan struct{})
	}
	if st.terminal == nil && !st.started {
		if initial && hr.Status.Phase.IsTerminal() && !h.resumable(hr) {
			// History from before this process started: remember, do not replay.
			st.started = true
			st.seen = len(hr.Status.Progress)
			if n := len(hr.Status.Progress); n > 0 {
				st.last = &hr.Status.Progress[n-1]
			}
			ev := h.terminalEvent(hr)
			st.terminal = &ev
			h.noteEndedLocked(targetKey, hr, true)
			return
		}
	}
	if st.terminal != nil {
		return
	}
	base := Event{
		Request:   hr.Name,
		Namespace: hr.Namespace,
		Service:   hr.Spec.Target.Service,
		Upstream:  hr.Spec.Trigger.Upstream,
		replayed:  initial,
	}
	if !st.started {
		st.started = true
		ev := base
		ev.ID = eventID(hr.Namespace, hr.Name, StepStart)
		ev.Type = EventHealingStart
		ev.Phase = string(orPending(hr.Status.Phase))
		ev.Message = fmt.Sprintf("Healing %s/%s after %s", hr.Namespace, hr.Spec.Target.Service, hr.Spec.Trigger.FailureClass)
		if !hr.CreationTimestamp.IsZero() {
			ev.Time = hr.CreationTimestamp.Time
		}
		h.hub.Publish(ev)
	}
	if !hr.Status.Phase.IsTerminal() && hr.Status.DuplicateOf == "" {
		// The active request is the oldest, ordered as the controller orders them
		// (selfhealv1alpha1.CreatedBefore), not the first this process happened to see.
		cur, ok := h.active[targetKey]
		if !ok {
			h.active[targetKey] = hr.Name
		} else if cs := h.states[stateKey(hr.Namespace, cur)]; cur != hr.Name && cs != nil && cs.latest != nil &&
			selfhealv1alpha1.CreatedBefore(hr, cs.latest) {
			h.active[targetKey] = hr.Name
		}
	}
	first := st.seen + 1 // the step of the first new entry
	for i, p := range newProgress(st, hr.Status.Progress) {
		ev := base
		ev.ID = eventID(hr.Namespace, hr.Name, first+i)
		ev.Type = EventHealingProgress
		ev.Phase = string(p.Phase)
		ev.Message = p.Message
		ev.Time = p.Time.Time
		ev.Attempt = int(hr.Status.Attempts)
		h.hub.Publish(ev)
	}
	if hr.Status.DuplicateOf != "" && st.duplicateOf != hr.Status.DuplicateOf {
		st.duplicateOf = hr.Status.DuplicateOf
		ev := base
		ev.ID = eventID(hr.Namespace, hr.Name, stepDuplicate)
		ev.Type = EventHealingProgress
		ev.Phase = string(hr.Status.Phase)
		ev.DuplicateOf = hr.Status.DuplicateOf
		ev.Message = fmt.Sprintf("Another healing of %s is active: following %s", hr.Spec.Target.Service, hr.Status.DuplicateOf)
		h.hub.Publish(ev)
	}
	if hr.Status.Phase.IsTerminal() {
		if h.active[targetKey] == hr.Name {
			delete(h.active, targetKey)
		}
		// A request that had ended before this process started (resumable history)
		// was not seen ending here.
		h.noteEndedLocked(targetKey, hr, initial)
		if st.duplicateOf != "" {
			// A duplicate ends by deferring; its outcome is the other request's.
			ev := h.terminalEvent(hr)
			st.terminal = &ev
			return
		}
		end := h.terminalEvent(hr)
		end.replayed = initial
		ev := h.hub.Publish(end)
		st.terminal = &ev
	}
}

// resumable reports whether a request that had ended when this process started
// ended recently enough (ResumableHistory) for its events to be published, so a
// client resumes it here as on any other replica.
func (h *Healer) resumable(hr *selfhealv1alpha1.HealingRequest) bool {
	c := hr.Status.CompletionTime
	return c != nil && h.clock.Since(c.Time) < ResumableHistory
}

func orPending(p selfhealv1alpha1.HealingPhase) selfhealv1alpha1.HealingPhase {
	if p == "" {
		return selfhealv1alpha1.PhasePending
	}
	return p
}

// newProgress returns the entries after the last one published. The log is bounded
// and trimmed from the front, so the last published entry is found by value.
func newProgress(st *requestState, entries []selfhealv1alpha1.ProgressEntry) []selfhealv1alpha1.ProgressEntry {
	if len(entries) == 0 {
		return nil
	}
	var fresh []selfhealv1alpha1.ProgressEntry
	if st.last == nil {
		fresh = entries
	} else {
		found := -1
		for i := len(entries) - 1; i >= 0; i-- {
			if sameEntry(&entries[i], st.last) {
				found = i
				break
			}
		}
		if found >= 0 {
			fresh = entries[found+1:]
		} else {
			// Trimmed past the last one we saw: everything not older is new.
			for i := range entries {
				if !entries[i].Time.Before(&st.last.Time) {
					fresh = append(fresh, entries[i])
				}
			}
		}
	}
	if len(fresh) > 0 {
		last := fresh[len(fresh)-1]
		st.last = &last
		st.seen += len(fresh)
	}
	return fresh
}

func sameEntry(a, b *selfhealv1alpha1.ProgressEntry) bool {
	return a.Time.Equal(&b.Time) && a.Phase == b.Phase && a.Message == b.Message
}

// terminalEvent describes how hr ended, with the diagnosis when it did not heal.
func (h *Healer) terminalEvent(hr *selfhealv1alpha1.HealingRequest) Event {
	ev := Event{
		ID:          eventID(hr.Namespace, hr.Name, stepEnd),
		Request:     hr.Name,
		Namespace:   hr.Namespace,
		Service:     hr.Spec.Target.Service,
		Upstream:    hr.Spec.Trigger.Upstream,
		Phase:       string(hr.Status.Phase),
		Issue:       string(hr.Status.Issue),
		DuplicateOf: hr.Status.DuplicateOf,
		Attempt:     int(hr.Status.Attempts),
	}
	if hr.Status.CompletionTime != nil {
		ev.Time = hr.Status.CompletionTime.Time
	}
	ready := meta.FindStatusCondition(hr.Status.Conditions, selfhealv1alpha1.ConditionReady)
	if ready != nil {
		ev.Reason = ready.Reason
	}
	if hr.Status.Serves() {
		ev.Type = EventHealingComplete
		ev.Message = fmt.Sprintf("%s is healed", hr.Spec.Target.Service)
		if ready != nil && ready.Message != "" {
			ev.Message = ready.Message
		}
		return ev
	}
	ev.Type = EventHealingFailed
	for _, f := range hr.Status.Findings {
		if f.Result == selfhealv1alpha1.ResultFail || f.Result == selfhealv1alpha1.ResultWarn {
			ev.Findings = append(ev.Findings, FindingSummary{Check: string(f.Check), Result: string(f.Result), Message: f.Message})
		}
	}
	parts := []string{fmt.Sprintf("Healing of %s ended %s", hr.Spec.Target.Service, hr.Status.Phase)}
	if hr.Status.Issue != "" {
		parts = append(parts, "issue "+string(hr.Status.Issue))
	}
	if ready != nil && ready.Message != "" {
		parts = append(parts, ready.Message)
	}
	ev.Message = strings.Join(parts, ": ")
	return ev
}

// forget drops the state of a deleted request; one deleted before it ended fails its
// waiters.
func (h *Healer) forget(hr *selfhealv1alpha1.HealingRequest) {
	h.mu.Lock()
	defer h.mu.Unlock()
	key := stateKey(hr.Namespace, hr.Name)
	st := h.states[key]
	delete(h.states, key)
	targetKey := hr.Namespace + "/" + hr.Spec.Target.Service
	if h.active[targetKey] == hr.Name {
		delete(h.active, targetKey)
	}
	if h.ended[targetKey].name == hr.Name {
		delete(h.ended, targetKey)
	}
	if st != nil && st.terminal == nil {
		h.hub.Publish(Event{
			ID:        eventID(hr.Namespace, hr.Name, stepEnd),
			Type:      EventHealingFailed,
			Request:   hr.Name,
			Namespace: hr.Namespace,
			Service:   hr.Spec.Target.Service,
			Upstream:  hr.Spec.Trigger.Upstream,
			Phase:     string(hr.Status.Phase),
			Message:   fmt.Sprintf("HealingRequest %s was deleted before it finished", hr.Name),
		})
	}
}

// Wait follows one healing: it delivers its events from now on and closes after the
// terminal one (following status.duplicateOf to the request it defers to), or when ctx
// ends. A healing that already ended yields its terminal event at once.
//
// The wait has one deadline, the request's own: status.deadline (set by the controller
// from the policy) plus DeadlineGrace. When it passes without a terminal phase, the
// wait ends with a healing_failed event of reason DeadlineExceeded that carries the
// diagnosis so far. While the request has no deadline yet, UnclaimedTimeout bounds the
// wait instead (reason NotPickedUp).
func (h *Healer) Wait(ctx context.Context, namespace, request string) <-chan Event {
	return h.Follow(ctx, namespace, request, false)
}

// Follow is Wait that, with replay, first delivers the request's events still kept by
// the hub, so a late follower sees the healing from its start.
func (h *Healer) Follow(ctx context.Context, namespace, request string, replay bool) <-chan Event {
	out := make(chan Event, 8)
	go h.follow(ctx, out, namespace, request, replay)
	return out
}

func (h *Healer) follow(ctx context.Context, out chan<- Event, namespace, request string, replay bool) {
	defer close(out)
	defer h.hold(namespace, request)()
	f := &follower{ctx: ctx, out: out, current: request}
	start := h.clock.Now()
	var lastID uint64
	resume := replay
	first := true
	for {
		sub, backlog, _ := h.hub.Subscribe(Filter{Namespace: namespace}, lastID, resume)
		for _, ev := range backlog {
			lastID = ev.Seq
			if done, ok := f.offer(ev); done || !ok {
				sub.Close()
				return
			}
		}
		if first {
			first = false
			// The healing may have ended before the subscription: deliver what the
			// channel already holds before that end, then the end.
			snap, dup := h.snapshot(namespace, f.current)
			for dup != "" && snap == nil {
				f.current = dup
				snap, dup = h.snapshot(namespace, f.current)
			}
			if snap != nil && (snap.Seq == 0 || snap.Seq > lastID) {
			drain:
				for {
					select {
					case ev, ok := <-sub.Events():
						if !ok || (snap.Seq != 0 && ev.Seq >= snap.Seq) {
							break drain
						}
						if done, ok := f.offer(ev); done || !ok {
							sub.Close()
							return
						}
					default:
						break drain
					}
				}
				sub.Close()
				f.send(*snap)
				return
			}
		}
		for {
			var ev *Event
			var ok bool
			releaseAt, retime := h.releaseAt(namespace, f.current, start)
			timer := h.clock.NewTimer(releaseAt.Sub(h.clock.Now()))
			select {
			case ev, ok = <-sub.Events():
			case <-ctx.Done():
				timer.Stop()
				sub.Close()
				return
			case <-retime:
				timer.Stop()
				continue
			case <-timer.C():
				sub.Close()
				f.send(h.expired(namespace, f.current))
				return
			}
			timer.Stop()
			if !ok {
				break
			}
			lastID = ev.Seq
			if done, sent := f.offer(ev); done || !sent {
				sub.Close()
				return
			}
			if f.followed != "" {
				// Switched to the request this one defers to: it may have ended.
				next := f.followed
				f.followed = ""
				if snap, _ := h.snapshot(namespace, next); snap != nil {
					sub.Close()
					f.send(*snap)
					return
				}
			}
		}
		if errors.Is(sub.Err(), ErrHubClosed) {
			f.send(Event{Type: EventHealingFailed, Request: f.current, Namespace: namespace, Message: "gateway shutting down"})
			return
		}
		resume = true // dropped while the caller was slow: resume from the ring
	}
}

// hold counts a call following a request until the returned func is called.
func (h *Healer) hold(namespace, request string) func() {
	key := stateKey(namespace, request)
	h.mu.Lock()
	h.held[key]++
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.held[key]--; h.held[key] <= 0 {
			delete(h.held, key)
		}
	}
}

// Held is how many calls on this gateway replica wait for the request now: MCP calls
// held until it ends, and report streams following it.
func (h *Healer) Held(namespace, request string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held[stateKey(namespace, request)]
}

// follower forwards the events of one request, switching to the request it defers to.
type follower struct {
	ctx      context.Context
	out      chan<- Event
	current  string
	followed string // set when offer switched current
}

func (f *follower) send(ev Event) bool {
	select {
	case f.out <- ev:
		return true
	case <-f.ctx.Done():
		return false
	}
}

// offer delivers ev when it belongs to the followed request; done is true after the
// terminal event, ok false when the caller went away.
func (f *follower) offer(ev *Event) (done, ok bool) {
	if ev.Request != f.current {
		return false, true
	}
	if !f.send(*ev) {
		return false, false
	}
	if ev.DuplicateOf != "" && !ev.Terminal() {
		f.current = ev.DuplicateOf
		f.followed = ev.DuplicateOf
		return false, true
	}
	return ev.Terminal(), true
}

// snapshot returns the terminal event of a request this process has seen end, or the
// request it defers to.
func (h *Healer) snapshot(namespace, name string) (*Event, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.states[stateKey(namespace, name)]
	if st == nil {
		return nil, ""
	}
	if st.duplicateOf != "" {
		return nil, st.duplicateOf
	}
	if st.terminal != nil {
		ev := *st.terminal
		return &ev, ""
	}
	return nil, ""
}

// Reasons of the healing_failed event that ends a wait the request did not end itself.
const (
	// ReasonNotPickedUp: no controller stamped the request with a deadline within
	// UnclaimedTimeout.
	ReasonNotPickedUp = "NotPickedUp"
)

// releaseAt is when a wait on the request ends if the request has not: its deadline
// plus the grace, or, while it has none, UnclaimedTimeout after the wait began. The
// channel is closed when a deadline is set or changes.
func (h *Healer) releaseAt(namespace, name string, start time.Time) (time.Time, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.states[stateKey(namespace, name)]; st != nil && !st.deadline.IsZero() {
		return st.deadline.Add(h.grace), h.deadlines
	}
	return start.Add(h.unclaimed), h.deadlines
}

// expired is the outcome of a wait whose request passed its deadline (plus grace)
// without a terminal phase: a failure carrying the diagnosis recorded so far.
func (h *Healer) expired(namespace, name string) Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.states[stateKey(namespace, name)]
	if st == nil || st.latest == nil || st.deadline.IsZero() {
		ev := Event{Type: EventHealingFailed, Request: name, Namespace: namespace, Reason: ReasonNotPickedUp,
			Message: fmt.Sprintf("HealingRequest %s was not picked up by a selfheal controller within %s: is the controller running and watching namespace %s?",
				name, h.unclaimed, namespace)}
		if st != nil && st.latest != nil {
			ev.Service, ev.Upstream, ev.Phase = st.latest.Spec.Target.Service, st.latest.Spec.Trigger.Upstream, string(orPending(st.latest.Status.Phase))
		}
		return ev
	}
	hr := st.latest
	ev := h.terminalEvent(hr)
	ev.ID = "" // this waiter's outcome, not the healing's: never published
	ev.Type = EventHealingFailed
	ev.Phase = string(orPending(hr.Status.Phase))
	ev.Reason = selfhealv1alpha1.ReasonDeadlineExceeded
	ev.Time = h.clock.Now()
	parts := []string{fmt.Sprintf("Healing of %s did not end by its deadline %s (still %s)",
		hr.Spec.Target.Service, st.deadline.UTC().Format(time.RFC3339), ev.Phase)}
	if hr.Status.Issue != "" {
		parts = append(parts, "issue "+string(hr.Status.Issue))
	}
	if n := len(hr.Status.Progress); n > 0 {
		parts = append(parts, "last step: "+hr.Status.Progress[n-1].Message)
	}
	ev.Message = strings.Join(parts, ": ")
	return ev
}

// noteEndedLocked remembers hr as its target's latest ended healing (a duplicate
// ended by deferring: the incident is the other request), with when this process saw
// it end (history found at start: its completionTime, plus the second it may have
// been truncated by).
func (h *Healer) noteEndedLocked(targetKey string, hr *selfhealv1alpha1.HealingRequest, history bool) {
	if hr.Status.DuplicateOf != "" || hr.Status.CompletionTime == nil {
		return
	}
	completed := hr.Status.CompletionTime.Time
	observed := h.clock.Now()
	if history {
		observed = completed.Add(time.Second)
	}
	// The latest incident by start, not by completionTime: that has whole seconds,
	// and back-to-back healings of one Service end within one.
	if e, ok := h.ended[targetKey]; ok && startedBefore(hr, e.incident) {
		return
	}
	incident := &selfhealv1alpha1.HealingRequest{
		ObjectMeta: metav1.ObjectMeta{Name: hr.Name, CreationTimestamp: hr.CreationTimestamp},
		Status:     selfhealv1alpha1.HealingRequestStatus{StartTime: hr.Status.StartTime},
	}
	h.ended[targetKey] = endedRequest{name: hr.Name, incident: incident, completed: completed, observed: observed}
}
