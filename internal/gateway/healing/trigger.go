package healing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
	"github.com/selfheal-dev/selfheal/internal/gateway/access"
)

// LabelService is set on the HealingRequests the gateway creates, naming the target
// Service.
const LabelService = "selfheal.dev/service"

var (
	// ErrHealingUnavailable means no cluster is reachable (no client configured, the
	// watch has not synced, or the API server answered with an error): the caller
	// reports "healing unavailable" instead of waiting.
	ErrHealingUnavailable = errors.New("healing unavailable")
	// ErrInvalidFailure means the reported failure cannot become a HealingRequest.
	ErrInvalidFailure = errors.New("invalid failure report")
	// ErrOutOfScope means the gateway does not heal the named Service: it is not a
	// configured target.
	ErrOutOfScope = errors.New("not a healing target of this gateway")
	// ErrSlowSubscriber ends a subscription that fell behind.
	ErrSlowSubscriber = errors.New("subscriber too slow: events dropped")
	// ErrHubClosed ends every subscription when the gateway shuts down.
	ErrHubClosed = errors.New("gateway shutting down")
)

// Failure is one failed call to an in-cluster Service.
type Failure struct {
	Namespace  string
	Service    string
	Upstream   string
	Class      selfhealv1alpha1.FailureClass
	HTTPStatus int
	Message    string
	// Source defaults to gateway.
	Source selfhealv1alpha1.TriggerSource
	// Seen is when the failed call was sent (or the reporter saw the failure). A
	// failure seen before a healing of its target ended belongs to that healing's
	// incident (see Options.JoinEndedWithin); one seen after it is new. Zero (a report
	// that names no time) joins a healing that ended within the window on arrival.
	Seen time.Time
}

// Options configures a Healer.
type Options struct {
	// Client creates HealingRequests. Nil means no cluster: healing is unavailable.
	Client client.Client
	// APIReader lists HealingRequests uncached when deciding whether to create one, so
	// a stale cache never causes a second request. Defaults to Client.
	APIReader client.Reader
	// Hub receives the events; required.
	Hub *Hub
	// Namespaces the gateway may create requests in and watches; empty means any.
	Namespaces []string
	// Targets are the only Services requests may be created for; empty means any
	// in Namespaces.
	Targets []access.Target
	// APITimeout bounds each Trigger's API calls. Default 10s.
	APITimeout time.Duration
	// DeadlineGrace is how long after a request's status.deadline a waiter is still
	// held, so that the controller can record the terminal phase (and its diagnosis)
	// it reaches at the deadline. Default 5s.
	DeadlineGrace time.Duration
	// UnclaimedTimeout bounds a wait on a request that has no status.deadline yet. See
	// DefaultUnclaimedTimeout.
	UnclaimedTimeout time.Duration
	// JoinEndedWithin: a failure of a target whose healing ended less than this long
	// ago (status.completionTime) joins that healing, and its caller gets the outcome,
	// instead of opening a new incident, when it was seen before the healing ended:
	// the calls that failed during an incident keep arriving for a moment after it
	// ended (in-flight calls, late reports). A failure seen after the end (a call sent
	// to the healed Service) is a new incident. Zero takes DefaultJoinEndedWithin;
	// negative turns it off.
	JoinEndedWithin time.Duration
	// Clock times waits and stamps requests; tests inject a fake one.
	Clock clock.Clock
	// Observe, when set, is told of every Trigger that got a request: whether this
	// call created it or joined one (for the gateway's metrics).
	Observe func(upstream string, created bool)
}

// Healer creates or joins HealingRequests and follows them.
type Healer struct {
	client     client.Client
	reader     client.Reader
	hub        *Hub
	namespaces []string
	targets    []access.Target
	apiTimeout time.Duration
	grace      time.Duration
	unclaimed  time.Duration
	joinEnded  time.Duration
	clock      clock.Clock
	onTrigger  func(upstream string, created bool)
	flight     singleflight.Group

	mu      sync.Mutex
	synced  func() bool
	states  map[string]*requestState // namespace/name -> what this process has seen
	active  map[string]string        // namespace/service -> name of the active request
	ended   map[string]endedRequest  // namespace/service -> its latest ended request
	created int                      // requests this process created, for tests and metrics
	held    map[string]int           // namespace/name -> calls following it now (held calls, report streams)
	// deadlines is closed (and replaced) whenever a request's status.deadline is first
	// seen or changes, so that waiters re-time themselves.
	deadlines chan struct{}
}

// Defaults of Options.
const (
	DefaultDeadlineGrace = 5 * time.Second
	// DefaultUnclaimedTimeout bounds the wait on a request no controller has stamped
	// with a deadline. The deadline is the controller's to set (startTime plus the
	// policy's deadline, when it first sees the request); until then there is no
	// deadline to follow, and a call must not be held forever for a request that no
	// controller may ever see (none running, or none watching that namespace). A
	// minute covers a controller's leader election after a restart.
	DefaultUnclaimedTimeout = time.Minute
	// DefaultJoinEndedWithin is Options.JoinEndedWithin's default.
	DefaultJoinEndedWithin = 30 * time.Second
	// ResumableHistory is how long ago a healing may have ended, when this process
	// starts, for its events to be kept for Last-Event-ID resume: a client whose
	// replica restarted (a rolling update, a crash) while the healing ended resumes
	// on this one and gets the end. Older history is remembered, not replayed.
	ResumableHistory = 5 * time.Minute
)

// endedRequest is the latest healing of a target that ended (not as a duplicate).
type endedRequest struct {
	name string
	// incident is its name, creation and start, which order it among the target's
	// incidents (startedBefore), as the API server's list is ordered.
	incident *selfhealv1alpha1.HealingRequest
	// completed is its status.completionTime (the controller's clock, to the
	// second): how long ago it ended.
	completed time.Time
	// observed is when this process saw it end (its own clock, to the nanosecond):
	// what a failure's Seen is compared with.
	observed time.Time
}

// New returns a Healer. Call Start to watch HealingRequests; until the watch has synced,
// Trigger returns ErrHealingUnavailable.
func New(opts Options) *Healer {
	if opts.APIReader == nil && opts.Client != nil {
		opts.APIReader = opts.Client
	}
	if opts.APITimeout <= 0 {
		opts.APITimeout = 10 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.DeadlineGrace <= 0 {
		opts.DeadlineGrace = DefaultDeadlineGrace
	}
	if opts.UnclaimedTimeout <= 0 {
		opts.UnclaimedTimeout = DefaultUnclaimedTimeout
	}
	if opts.JoinEndedWithin == 0 {
		opts.JoinEndedWithin = DefaultJoinEndedWithin
	}
	if opts.Hub == nil {
		opts.Hub = NewHub(HubOptions{Clock: opts.Clock})
	}
	return &Healer{
		client:     opts.Client,
		reader:     opts.APIReader,
		hub:        opts.Hub,
		namespaces: opts.Namespaces,
		targets:    opts.Targets,
		apiTimeout: opts.APITimeout,
		grace:      opts.DeadlineGrace,
		unclaimed:  opts.UnclaimedTimeout,
		joinEnded:  opts.JoinEndedWithin,
		clock:      opts.Clock,
		onTrigger:  opts.Observe,
		states:     map[string]*requestState{},
		active:     map[string]string{},
		ended:      map[string]endedRequest{},
		held:       map[string]int{},
		deadlines:  make(chan struct{}),
	}
}

// Hub is the event hub the healer publishes to.
func (h *Healer) Hub() *Hub { return h.hub }

// Available reports whether a cluster is configured and the watch has synced.
func (h *Healer) Available() bool {
	if h == nil || h.client == nil {
		return false
	}
	h.mu.Lock()
	synced := h.synced
	h.mu.Unlock()
	return synced != nil && synced()
}

// Created is how many HealingRequests this process has created.
func (h *Healer) Created() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.created
}

// Validate checks a failure report before anything is created.
func (f *Failure) Validate() error {
	if f.Namespace == "" || f.Service == "" {
		return fmt.Errorf("%w: namespace and service are required", ErrInvalidFailure)
	}
	if errs := validation.IsDNS1123Label(f.Namespace); len(errs) > 0 {
		return fmt.Errorf("%w: namespace %q: %s", ErrInvalidFailure, f.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1035Label(f.Service); len(errs) > 0 {
		return fmt.Errorf("%w: service %q: %s", ErrInvalidFailure, f.Service, strings.Join(errs, "; "))
	}
	if !ValidFailureClass(f.Class) {
		return fmt.Errorf("%w: unknown failure class %q", ErrInvalidFailure, f.Class)
	}
	if f.HTTPStatus != 0 && (f.Class != selfhealv1alpha1.FailureHTTP5xx || f.HTTPStatus < 500 || f.HTTPStatus > 599) {
		return fmt.Errorf("%w: httpStatus %d needs failure class HTTP5xx and a 5xx code", ErrInvalidFailure, f.HTTPStatus)
	}
	if len(f.Upstream) > 63 {
		return fmt.Errorf("%w: upstream name longer than 63 characters", ErrInvalidFailure)
	}
	return nil
}

// ValidFailureClass reports whether c is one of the API's failure classes.
func ValidFailureClass(c selfhealv1alpha1.FailureClass) bool {
	switch c {
	case selfhealv1alpha1.FailureConnectionRefused, selfhealv1alpha1.FailureConnectionReset, selfhealv1alpha1.FailureTimeout,
		selfhealv1alpha1.FailureHTTP5xx, selfhealv1alpha1.FailureMCPSessionLost, selfhealv1alpha1.FailureOther:
		return true
	}
	return false
}

// Trigger creates or joins the one active HealingRequest for the failure's target and
// returns its name; a failure shortly after that target's healing ended joins the
// ended one (JoinEndedWithin: one incident, one record). Concurrent calls for one
// target in this process share one API round trip; across replicas the deterministic
// name makes the API server arbitrate.
func (h *Healer) Trigger(ctx context.Context, f Failure) (string, error) {
	if err := f.Validate(); err != nil {
		return "", err
	}
	if err := h.InScope(access.Target{Namespace: f.Namespace, Service: f.Service}); err != nil {
		return "", err
	}
	if !h.Available() {
		return "", ErrHealingUnavailable
	}
	key := f.Namespace + "/" + f.Service
	if name, ok := h.activeFor(key); ok {
		h.observed(f, false)
		return name, nil
	}
	if name, ok := h.recentlyEnded(key, f.Seen); ok {
		h.observed(f, false)
		return name, nil
	}
	// me identifies this call: the flight's function is this call's closure only when
	// this call leads the flight, so a request created there is this call's.
	me := new(byte)
	ch := h.flight.DoChan(key, func() (any, error) {
		if name, ok := h.activeFor(key); ok {
			return triggered{name: name}, nil
		}
		if name, ok := h.recentlyEnded(key, f.Seen); ok {
			return triggered{name: name}, nil
		}
		// The API work outlives one caller's cancellation: other callers share it.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.apiTimeout)
		defer cancel()
		name, created, err := h.createOrJoin(actx, f)
		t := triggered{name: name}
		if created {
			t.creator = me
		}
		return t, err
	})
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		t := res.Val.(triggered)
		h.observed(f, t.creator == me)
		return t.name, nil
	}
}

// InScope says whether the gateway heals t: it must be a configured target (and in
// a namespace the gateway watches). The error wraps ErrOutOfScope.
func (h *Healer) InScope(t access.Target) error {
	if len(h.namespaces) > 0 && !slices.Contains(h.namespaces, t.Namespace) {
		return fmt.Errorf("%w: namespace %q is not one the gateway heals in", ErrOutOfScope, t.Namespace)
	}
	if len(h.targets) > 0 && !slices.Contains(h.targets, t) {
		return fmt.Errorf("%w: service %q in namespace %q is not a configured upstream's Service or a healing.targets entry", ErrOutOfScope, t.Service, t.Namespace)
	}
	return nil
}

// triggered is the shared result of one flight of Trigger calls.
type triggered struct {
	name    string
	creator *byte // the call that created the request; nil when it was joined
}

// observed tells Observe about a trigger. A reported failure is labelled by its
// source, never by the upstream name the client put in the report.
func (h *Healer) observed(f Failure, created bool) {
	if h.onTrigger == nil {
		return
	}
	label := f.Upstream
	if f.Source == selfhealv1alpha1.TriggerSourceChatAPI {
		label = string(selfhealv1alpha1.TriggerSourceChatAPI)
	}
	h.onTrigger(label, created)
}

func (h *Healer) activeFor(key string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	name, ok := h.active[key]
	return name, ok
}

// recentlyEnded is the target's latest ended healing, when a failure seen at seen
// belongs to it (joins).
func (h *Healer) recentlyEnded(key string, seen time.Time) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.ended[key]
	if !ok || !h.joins(e.completed, e.observed, seen) {
		return "", false
	}
	return e.name, true
}

// joins says whether a failure seen at seen belongs to a healing that completed at
// completed, an end this process observed at observed: it completed less than
// JoinEndedWithin ago and the failure was seen before the end (or names no time).
func (h *Healer) joins(completed, observed, seen time.Time) bool {
	if h.joinEnded <= 0 || completed.IsZero() || h.clock.Since(completed) >= h.joinEnded {
		return false
	}
	return seen.IsZero() || seen.Before(observed)
}

// joinsListed is joins for an ended request read from the API server: ordered
// against when this process saw it end, or, when it has not, against its
// status.completionTime, which has one-second resolution, hence the second of slack.
func (h *Healer) joinsListed(key string, hr *selfhealv1alpha1.HealingRequest, seen time.Time) bool {
	if hr.Status.DuplicateOf != "" || hr.Status.CompletionTime == nil {
		return false
	}
	completed := hr.Status.CompletionTime.Time
	observed := completed.Add(time.Second)
	h.mu.Lock()
	if e, ok := h.ended[key]; ok && e.name == hr.Name {
		observed = e.observed
	}
	h.mu.Unlock()
	return h.joins(completed, observed, seen)
}

func (h *Healer) setActive(key, name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.active[key] = name
}

func (h *Healer) createOrJoin(ctx context.Context, f Failure) (string, bool, error) {
	log := ctrl.LoggerFrom(ctx).WithValues("namespace", f.Namespace, "service", f.Service)
	key := f.Namespace + "/" + f.Service
	// walk follows the chain of incident names: when the name computed from the
	// newest finished request is already taken by a finished one (timestamps have
	// second resolution, so "newest" can pick an older link), the taken one is the
	// better predecessor. Every replica walking the same chain reaches the same name.
	walk := ""
	for range maxCreateAttempts {
		var list selfhealv1alpha1.HealingRequestList
		if err := h.reader.List(ctx, &list, client.InNamespace(f.Namespace)); err != nil {
			return "", false, fmt.Errorf("%w: listing HealingRequests in %s: %w", ErrHealingUnavailable, f.Namespace, err)
		}
		var active, newestDone, lastEnded *selfhealv1alpha1.HealingRequest
		for i := range list.Items {
			hr := &list.Items[i]
			if hr.Spec.Target.Service != f.Service || hr.DeletionTimestamp != nil {
				continue
			}
			// One ordering for "oldest" and "newest", the controller's too:
			// creation time, then name.
			if hr.Status.Phase.IsTerminal() {
				if newestDone == nil || selfhealv1alpha1.CreatedBefore(newestDone, hr) {
					newestDone = hr
				}
				if hr.Status.DuplicateOf == "" && (lastEnded == nil || startedBefore(lastEnded, hr)) {
					lastEnded = hr
				}
				continue
			}
			if hr.Status.DuplicateOf != "" {
				continue // it defers to another one, which is the one to join
			}
			if active == nil || selfhealv1alpha1.CreatedBefore(hr, active) {
				active = hr // the oldest active request wins
			}
		}
		if active != nil {
			h.setActive(key, active.Name)
			log.V(1).Info("Joining active HealingRequest", "healingRequest", active.Name)
			return active.Name, false, nil
		}
		// Only the target's last incident can be joined: a failure seen after a later
		// healing ended belongs to none of the earlier ones, however recently they
		// ended.
		if lastEnded != nil && h.joinsListed(key, lastEnded, f.Seen) {
			log.V(1).Info("Joining a HealingRequest that just ended", "healingRequest", lastEnded.Name)
			return lastEnded.Name, false, nil
		}
		predecessor := walk
		if predecessor == "" && newestDone != nil {
			predecessor = newestDone.Name
		}
		hr := h.newRequest(f, RequestName(f.Service, predecessor))
		log.Info("Creating HealingRequest", "healingRequest", hr.Name, "failureClass", f.Class)
		err := h.client.Create(ctx, hr)
		switch {
		case err == nil:
			h.mu.Lock()
			h.created++
			h.mu.Unlock()
			h.setActive(key, hr.Name)
			return hr.Name, true, nil
		case apierrors.IsAlreadyExists(err):
			// Another replica (or an earlier call) created it: join it, unless it
			// has already ended, in which case this is a new incident.
			var existing selfhealv1alpha1.HealingRequest
			if err := h.reader.Get(ctx, client.ObjectKeyFromObject(hr), &existing); err != nil {
				if apierrors.IsNotFound(err) {
					continue
				}
				return "", false, fmt.Errorf("%w: reading HealingRequest %s: %w", ErrHealingUnavailable, hr.Name, err)
			}
			if !existing.Status.Phase.IsTerminal() {
				h.setActive(key, existing.Name)
				return existing.Name, false, nil
			}
			last := lastEnded == nil || !startedBefore(&existing, lastEnded)
			if last && h.joinsListed(key, &existing, f.Seen) {
				return existing.Name, false, nil
			}
			walk = existing.Name
		case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
			return "", false, fmt.Errorf("%w: %w", ErrInvalidFailure, err)
		default:
			return "", false, fmt.Errorf("%w: creating HealingRequest %s: %w", ErrHealingUnavailable, hr.Name, err)
		}
	}
	return "", false, fmt.Errorf("%w: no stable HealingRequest for %s after %d attempts", ErrHealingUnavailable, key, maxCreateAttempts)
}

// startedBefore orders a target's incidents by when a controller first saw them
// (status.startTime, with microseconds): creation timestamps have whole seconds, and the
// suite's back-to-back healings of one Service begin and end within one. Requests not
// started yet fall back to CreatedBefore.
func startedBefore(a, b *selfhealv1alpha1.HealingRequest) bool {
	sa, sb := a.Status.StartTime, b.Status.StartTime
	if sa == nil || sb == nil || sa.Equal(sb) {
		return selfhealv1alpha1.CreatedBefore(a, b)
	}
	return sa.Before(sb)
}

// maxCreateAttempts bounds the list-create rounds of one trigger.
const maxCreateAttempts = 10

// RequestName is the deterministic name of the incident that follows predecessor (the
// newest finished request for the service, "" for the first one). Every replica that
// sees the same history computes the same name.
func RequestName(service, predecessor string) string {
	sum := sha256.Sum256([]byte(service + "/" + predecessor))
	return service + "-" + hex.EncodeToString(sum[:])[:10]
}

func (h *Healer) newRequest(f Failure, name string) *selfhealv1alpha1.HealingRequest {
	source := f.Source
	if source == "" {
		source = selfhealv1alpha1.TriggerSourceGateway
	}
	now := metav1.NewTime(h.clock.Now())
	return &selfhealv1alpha1.HealingRequest{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: f.Namespace,
			Labels:    map[string]string{LabelService: f.Service},
		},
		Spec: selfhealv1alpha1.HealingRequestSpec{
			Target: selfhealv1alpha1.HealingTarget{Service: f.Service},
			Trigger: selfhealv1alpha1.HealingTrigger{
				Source:       source,
				FailureClass: f.Class,
				HTTPStatus:   int32(f.HTTPStatus),
				Message:      Redact(f.Message, 1024),
				Upstream:     f.Upstream,
				Time:         &now,
			},
		},
	}
}

// Redact removes credential-looking substrings from s and bounds it to max bytes
// without cutting a rune.
func Redact(s string, max int) string {
	// One set of secret patterns for the whole product: the diagnostics' redaction,
	// which is table- and fuzz-tested.
	s = diagnostics.Redact(s)
	if max > 0 && len(s) > max {
		s = s[:max]
		// do not cut a UTF-8 sequence in half
		for len(s) > 0 && s[len(s)-1]&0xC0 == 0x80 {
			s = s[:len(s)-1]
		}
		if len(s) > 0 && s[len(s)-1] >= 0xC0 {
			s = s[:len(s)-1]
		}
	}
	return s
}
