package healing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
)

var cp *controlplane.ControlPlane

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	var err error
	cp, err = controlplane.Start(context.Background(), controlplane.Options{Progress: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the control plane:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := cp.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
	}
	os.Exit(code)
}

var nsCounter struct {
	sync.Mutex
	n int
}

// freshNamespace creates a namespace for one test.
func freshNamespace(t *testing.T) string {
	t.Helper()
	nsCounter.Lock()
	nsCounter.n++
	name := fmt.Sprintf("heal-%d-%d", os.Getpid()%10000, nsCounter.n)
	nsCounter.Unlock()
	if err := cp.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

// startHealer runs a Healer as one gateway replica would: its own informer cache on
// the namespace and an uncached client.
func startHealer(t *testing.T, ctx context.Context, ns string, hub *Hub) *Healer {
	t.Helper()
	return startHealerWith(t, ctx, ns, Options{Hub: hub})
}

// startHealerWith is startHealer with options; the client and namespace are set here.
func startHealerWith(t *testing.T, ctx context.Context, ns string, opts Options) *Healer {
	t.Helper()
	c, err := NewInformerCache(cp.Config, []string{ns})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go func() { _ = c.Start(cctx) }()
	opts.Client, opts.Namespaces = cp.Client, []string{ns}
	h := New(opts)
	if err := h.Start(cctx, c); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, h.Available)
	return h
}

// reportedRefusal starts a healer on a fresh namespace and reports a refused connection to
// it: the context (a minute), the healer, the namespace and the request created.
func reportedRefusal(t *testing.T) (context.Context, *Healer, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	ns := freshNamespace(t)
	h := startHealer(t, ctx, ns, NewHub(HubOptions{}))
	name, err := h.Trigger(ctx, refused(ns))
	if err != nil {
		t.Fatal(err)
	}
	return ctx, h, ns, name
}

func listRequests(t *testing.T, ns string) []selfhealv1alpha1.HealingRequest {
	t.Helper()
	var list selfhealv1alpha1.HealingRequestList
	if err := cp.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// playController updates the request's status through the API, as the controller does.
func playController(t *testing.T, ns, name string, mutate func(*selfhealv1alpha1.HealingRequestStatus)) {
	t.Helper()
	ctx := context.Background()
	for {
		var hr selfhealv1alpha1.HealingRequest
		if err := cp.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &hr); err != nil {
			t.Fatal(err)
		}
		mutate(&hr.Status)
		err := cp.Client.Status().Update(ctx, &hr)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "the object has been modified") {
			t.Fatalf("updating status of %s: %v", name, err)
		}
	}
}

var stepTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func addProgress(phase selfhealv1alpha1.HealingPhase, msgs ...string) func(*selfhealv1alpha1.HealingRequestStatus) {
	return func(s *selfhealv1alpha1.HealingRequestStatus) {
		s.Phase = phase
		for _, m := range msgs {
			// Several entries share a second: the dedupe must not rely on time alone.
			s.Progress = append(s.Progress, selfhealv1alpha1.ProgressEntry{Time: metav1.NewTime(stepTime), Phase: phase, Message: m})
		}
	}
}

func finish(phase selfhealv1alpha1.HealingPhase, issue selfhealv1alpha1.IssueType, reason, message string, findings ...selfhealv1alpha1.Finding) func(*selfhealv1alpha1.HealingRequestStatus) {
	return func(s *selfhealv1alpha1.HealingRequestStatus) {
		s.Phase = phase
		s.Issue = issue
		s.Findings = findings
		status := metav1.ConditionFalse
		if phase == selfhealv1alpha1.PhaseHealed {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: selfhealv1alpha1.ConditionReady, Status: status, Reason: reason, Message: message})
		now := metav1.NewTime(stepTime.Add(time.Minute))
		s.CompletionTime = &now
		s.Progress = append(s.Progress, selfhealv1alpha1.ProgressEntry{Time: now, Phase: phase, Message: message})
	}
}

func refused(ns string) Failure {
	return Failure{Namespace: ns, Service: "tools", Upstream: "tools", Class: selfhealv1alpha1.FailureConnectionRefused,
		Message: `dial tcp 10.0.0.7:8080: connect: connection refused (Authorization: Bearer sk-ant-api03-CANARY)`}
}

func TestTriggerFromManyCallsAndTwoReplicasMakesOneRequest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	replicaA := startHealer(t, ctx, ns, NewHub(HubOptions{}))
	replicaB := startHealer(t, ctx, ns, NewHub(HubOptions{}))

	const calls = 1000
	names := make(chan string, 2*calls)
	var wg sync.WaitGroup
	for i := range 2 * calls {
		h := replicaA
		if i%2 == 1 {
			h = replicaB
		}
		wg.Go(func() {
			name, err := h.Trigger(ctx, refused(ns))
			if err != nil {
				t.Errorf("Trigger: %v", err)
			}
			names <- name
		})
	}
	wg.Wait()
	close(names)
	distinct := map[string]int{}
	for n := range names {
		distinct[n]++
	}
	items := listRequests(t, ns)
	if len(items) != 1 || len(distinct) != 1 || distinct[items[0].Name] != 2*calls {
		t.Fatalf("%d HealingRequests, callers got names %v; want exactly one shared by all", len(items), distinct)
	}
	hr := items[0]
	if hr.Labels[LabelService] != "tools" || hr.Spec.Trigger.Source != selfhealv1alpha1.TriggerSourceGateway ||
		hr.Spec.Trigger.FailureClass != selfhealv1alpha1.FailureConnectionRefused || hr.Spec.Target.Service != "tools" || hr.Spec.Trigger.Upstream != "tools" {
		t.Fatalf("request %+v / %+v does not describe the failure", hr.Labels, hr.Spec)
	}
	if strings.Contains(hr.Spec.Trigger.Message, "CANARY") {
		t.Fatalf("a credential reached the HealingRequest: %q", hr.Spec.Trigger.Message)
	}
	if got := replicaA.Created() + replicaB.Created(); got != 1 {
		t.Fatalf("replicas report %d creates, want 1", got)
	}

	// Once it has ended, the next failure is a new incident with a new request.
	playController(t, ns, hr.Name, finish(selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueNoReadyPods, selfhealv1alpha1.ReasonHealed, "tools is serving again"))
	waitUntil(t, func() bool { _, ok := replicaA.activeFor(ns + "/tools"); return !ok })
	next, err := replicaA.Trigger(ctx, refused(ns))
	if err != nil {
		t.Fatal(err)
	}
	if next == hr.Name || next != RequestName("tools", hr.Name) {
		t.Fatalf("after the incident ended, Trigger gave %q; want the successor of %q", next, hr.Name)
	}
	// The other replica, racing for the same new incident, joins it.
	waitUntil(t, func() bool { _, ok := replicaB.activeFor(ns + "/tools"); return ok })
	if same, err := replicaB.Trigger(ctx, refused(ns)); err != nil || same != next {
		t.Fatalf("replica B joined %q (%v), want %q", same, err, next)
	}
	if n := len(listRequests(t, ns)); n != 2 {
		t.Fatalf("%d HealingRequests after the second incident, want 2", n)
	}
}

func TestWatchPublishesEachProgressEntryOnceAndTheOutcome(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	hub := NewHub(HubOptions{})
	h := startHealer(t, ctx, ns, hub)
	sub, _, _ := hub.Subscribe(Filter{Namespace: ns}, 0, false)
	defer sub.Close()

	name, err := h.Trigger(ctx, refused(ns))
	if err != nil {
		t.Fatal(err)
	}
	waitFor := h.Wait(ctx, ns, name)
	playController(t, ns, name, addProgress(selfhealv1alpha1.PhaseDiagnosing, "checking pods", "checking endpoints"))
	playController(t, ns, name, func(s *selfhealv1alpha1.HealingRequestStatus) { s.Attempts = 1 }) // no new entry
	playController(t, ns, name, addProgress(selfhealv1alpha1.PhaseRemediating, "restarting deployment/tools"))
	playController(t, ns, name, finish(selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ReasonHealed, "tools is serving again"))

	want := []string{
		EventHealingStart + " ",
		EventHealingProgress + " checking pods",
		EventHealingProgress + " checking endpoints",
		EventHealingProgress + " restarting deployment/tools",
		EventHealingProgress + " tools is serving again",
		EventHealingComplete + " tools is serving again",
	}
	var got []string
	for len(got) < len(want) {
		select {
		case ev := <-sub.Events():
			if ev.Request != name {
				t.Fatalf("event for %q", ev.Request)
			}
			msg := ev.Message
			if ev.Type == EventHealingStart {
				msg = ""
			}
			got = append(got, ev.Type+" "+msg)
		case <-ctx.Done():
			t.Fatalf("events so far %q, want %q", got, want)
		}
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("events\n got %q\nwant %q", got, want)
	}
	select {
	case ev := <-sub.Events():
		t.Fatalf("extra event %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}
	var last Event
	for ev := range waitFor {
		last = ev
	}
	if last.Type != EventHealingComplete || last.Request != name {
		t.Fatalf("Wait ended with %+v, want healing_complete", last)
	}
	// A waiter that arrives after the end gets the outcome at once.
	late := <-h.Wait(ctx, ns, name)
	if late.Type != EventHealingComplete {
		t.Fatalf("late Wait got %+v", late)
	}
}

func TestFailedHealingCarriesTheDiagnosis(t *testing.T) {
	ctx, h, ns, name := reportedRefusal(t)
	events := h.Wait(ctx, ns, name)
	playController(t, ns, name, finish(selfhealv1alpha1.PhaseFailed, selfhealv1alpha1.IssueImagePullBackOff, selfhealv1alpha1.ReasonNotHealable,
		`image "tools:v9" cannot be pulled`,
		selfhealv1alpha1.Finding{Check: selfhealv1alpha1.CheckPodStatus, Result: selfhealv1alpha1.ResultFail, Message: "pod tools-1 is in ImagePullBackOff"},
		selfhealv1alpha1.Finding{Check: selfhealv1alpha1.CheckEndpoints, Result: selfhealv1alpha1.ResultPass, Message: "ok"}))
	var last Event
	for ev := range events {
		last = ev
	}
	if last.Type != EventHealingFailed || last.Issue != "ImagePullBackOff" || last.Reason != selfhealv1alpha1.ReasonNotHealable ||
		!strings.Contains(last.Message, `image "tools:v9" cannot be pulled`) || len(last.Findings) != 1 || last.Findings[0].Check != "PodStatus" {
		t.Fatalf("terminal event %+v does not carry the diagnosis", last)
	}
}

func TestDuplicateRequestFollowsTheActiveOne(t *testing.T) {
	ctx, h, ns, primary := reportedRefusal(t)
	dup := &selfhealv1alpha1.HealingRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "tools-manual", Namespace: ns},
		Spec: selfhealv1alpha1.HealingRequestSpec{Target: selfhealv1alpha1.HealingTarget{Service: "tools"},
			Trigger: selfhealv1alpha1.HealingTrigger{Source: selfhealv1alpha1.TriggerSourceManual, FailureClass: selfhealv1alpha1.FailureOther}},
	}
	if err := cp.Client.Create(ctx, dup); err != nil {
		t.Fatal(err)
	}
	events := h.Wait(ctx, ns, dup.Name)
	playController(t, ns, dup.Name, func(s *selfhealv1alpha1.HealingRequestStatus) {
		s.Phase = selfhealv1alpha1.PhaseSkipped
		s.DuplicateOf = primary
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: selfhealv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: selfhealv1alpha1.ReasonDuplicate, Message: "defers to " + primary})
	})
	playController(t, ns, primary, finish(selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueNoReadyPods, selfhealv1alpha1.ReasonHealed, "tools is serving again"))
	var last Event
	for ev := range events {
		last = ev
	}
	if last.Type != EventHealingComplete || last.Request != primary {
		t.Fatalf("waiting on the duplicate ended with %+v, want the primary's healing_complete", last)
	}
}

func TestTriggerWithoutReachableClusterIsUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(&rest.Config{Host: "http://" + reserveClosedAddr(t)}, client.Options{Scheme: controlplane.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ic, err := NewInformerCache(&rest.Config{Host: "http://" + reserveClosedAddr(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ic.Start(ctx) }()
	h := New(Options{Client: c})
	// Starting the watch fails (no API discovery); the gateway keeps proxying.
	if err := h.Start(ctx, ic); err == nil {
		t.Fatal("Start against an unreachable API server succeeded")
	}
	if _, err := h.Trigger(ctx, refused("default")); !errors.Is(err, ErrHealingUnavailable) {
		t.Fatalf("Trigger with an unreachable API server: %v, want ErrHealingUnavailable", err)
	}
	if _, err := New(Options{}).Trigger(ctx, refused("default")); !errors.Is(err, ErrHealingUnavailable) {
		t.Fatalf("Trigger without a cluster: %v, want ErrHealingUnavailable", err)
	}
}

func TestReportEndpointStreamsTheHealing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	hub := NewHub(HubOptions{})
	h := startHealer(t, ctx, ns, hub)
	srv := httptest.NewServer(NewReportHandler(h, StreamOptions{}))
	defer srv.Close()

	body := fmt.Sprintf(`{"namespace":%q,"service":"search","reason":"Timeout","message":"upstream timed out","upstream":"search"}`, ns)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	name := resp.Header.Get("X-Healing-Request")
	if resp.StatusCode != http.StatusOK || name == "" || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("report answered %d %v", resp.StatusCode, resp.Header)
	}
	r := newSSEReader(t, resp.Body)
	if f, _ := r.next(); f.comment != "connected" {
		t.Fatalf("first frame %+v", f)
	}
	if ev := r.nextEvent().decode(t); ev.Type != EventHealingStart || ev.Request != name || ev.Service != "search" {
		t.Fatalf("first event %+v", ev)
	}
	playController(t, ns, name, addProgress(selfhealv1alpha1.PhaseDiagnosing, "checking pods"))
	if ev := r.nextEvent().decode(t); ev.Type != EventHealingProgress || ev.Message != "checking pods" || ev.Phase != "Diagnosing" {
		t.Fatalf("progress event %+v", ev)
	}
	playController(t, ns, name, finish(selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueNoReadyPods, selfhealv1alpha1.ReasonHealed, "search is serving again"))
	r.nextEvent() // the final progress entry
	if ev := r.nextEvent().decode(t); ev.Type != EventHealingComplete {
		t.Fatalf("last event %+v", ev)
	}
	if _, ok := r.next(); ok {
		t.Fatal("the stream continued after the healing ended")
	}
	var hr selfhealv1alpha1.HealingRequest
	if err := cp.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &hr); err != nil {
		t.Fatal(err)
	}
	if hr.Spec.Trigger.Source != selfhealv1alpha1.TriggerSourceChatAPI || hr.Spec.Trigger.FailureClass != selfhealv1alpha1.FailureTimeout {
		t.Fatalf("reported request %+v", hr.Spec.Trigger)
	}

	// A JSON-only client gets 202 with the name of the (new) request.
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(body))
	req.Header.Set("Accept", "application/json")
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	var rr ReportResponse
	_ = json.NewDecoder(resp2.Body).Decode(&rr)
	if resp2.StatusCode != http.StatusAccepted || rr.Request == "" || rr.Request == name || rr.Namespace != ns {
		t.Fatalf("JSON report: %d %+v", resp2.StatusCode, rr)
	}
}

func reserveClosedAddr(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.Listener.Addr().String()
	srv.Close()
	return addr
}

// Finished incidents created in the same second tie on creation time; whichever one
// "newest" picks, the trigger walks the chain of names to the next free one instead of
// giving up on a name that a finished incident holds.
func TestTriggerWalksTheChainWhenTimestampsTie(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	h := startHealer(t, ctx, ns, NewHub(HubOptions{}))
	// A chain of three finished incidents, each named after its predecessor, created
	// within one second so their creation timestamps tie.
	prev := ""
	for range 3 {
		hr := h.newRequest(refused(ns), RequestName("tools", prev))
		if err := cp.Client.Create(ctx, hr); err != nil {
			t.Fatal(err)
		}
		playController(t, ns, hr.Name, finish(selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueNoReadyPods, selfhealv1alpha1.ReasonHealed, "serving again"))
		prev = hr.Name
	}
	waitUntil(t, func() bool { return len(listRequests(t, ns)) == 3 })
	waitUntil(t, func() bool { _, ok := h.activeFor(ns + "/tools"); return !ok })

	name, err := h.Trigger(ctx, refused(ns))
	if err != nil {
		t.Fatalf("Trigger: %v", err)
	}
	if want := RequestName("tools", prev); name != want {
		t.Fatalf("Trigger made %q, want the successor of the last link %q", name, want)
	}
	if n := len(listRequests(t, ns)); n != 4 {
		t.Fatalf("%d HealingRequests, want 4", n)
	}
}

// A request no controller has stamped with a deadline is waited on for a bounded
// time only, and the waiter is told why. Catches: a wait on status.deadline alone,
// which holds calls forever when no controller runs.
func TestWaitOnARequestNoControllerSawEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	c, err := NewInformerCache(cp.Config, []string{ns})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	h := New(Options{Client: cp.Client, Namespaces: []string{ns}, UnclaimedTimeout: 300 * time.Millisecond})
	if err := h.Start(ctx, c); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, h.Available)
	name, err := h.Trigger(ctx, refused(ns))
	if err != nil {
		t.Fatal(err)
	}
	var last Event
	for ev := range h.Wait(ctx, ns, name) {
		last = ev
	}
	if ctx.Err() != nil {
		t.Fatal("the wait on a request no controller saw did not end")
	}
	if last.Type != EventHealingFailed || last.Reason != ReasonNotPickedUp || last.Request != name ||
		!strings.Contains(last.Message, "not picked up") {
		t.Fatalf("wait ended with %+v, want healing_failed NotPickedUp", last)
	}
}

// With two active requests for one Service (made by hand, or by replicas before the
// controller marked one a duplicate), the gateway joins the one the controller keeps:
// the oldest by selfhealv1alpha1.CreatedBefore, the one ordering both use. Catches: an
// ordering of the gateway's own that breaks creation-time ties differently.
func TestTriggerJoinsTheOldestActiveRequestAsTheControllerOrdersThem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	h := startHealer(t, ctx, ns, NewHub(HubOptions{}))
	// Created within one second (names in reverse order), so their creation
	// timestamps most likely tie and the name decides.
	for _, name := range []string{"tools-zz", "tools-aa"} {
		hr := &selfhealv1alpha1.HealingRequest{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: selfhealv1alpha1.HealingRequestSpec{Target: selfhealv1alpha1.HealingTarget{Service: "tools"},
				Trigger: selfhealv1alpha1.HealingTrigger{Source: selfhealv1alpha1.TriggerSourceManual, FailureClass: selfhealv1alpha1.FailureOther}},
		}
		if err := cp.Client.Create(ctx, hr); err != nil {
			t.Fatal(err)
		}
	}
	// Once this replica has seen both (before that, the one it joins defers to the
	// oldest through status.duplicateOf, which the controller sets).
	waitUntil(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.states[stateKey(ns, "tools-zz")] != nil && h.states[stateKey(ns, "tools-aa")] != nil
	})
	items := listRequests(t, ns)
	oldest := &items[0]
	for i := range items {
		if selfhealv1alpha1.CreatedBefore(&items[i], oldest) {
			oldest = &items[i]
		}
	}
	name, err := h.Trigger(ctx, refused(ns))
	if err != nil {
		t.Fatal(err)
	}
	if name != oldest.Name {
		t.Fatalf("Trigger joined %q, want %q, the oldest by selfhealv1alpha1.CreatedBefore (created %s and %s)",
			name, oldest.Name, items[0].CreationTimestamp, items[1].CreationTimestamp)
	}
}

// Event ids come from the HealingRequest (namespace/name/step), so a client that read
// part of a healing from one gateway replica resumes on another (its own informer,
// its own history) exactly: the steps it has not seen, once each, and no
// events_missed. Catches: ids from a per-process counter, which mean other events on
// the other replica.
func TestResumeOnAnotherReplicaIsExact(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	hubA, hubB := NewHub(HubOptions{}), NewHub(HubOptions{})
	a := startHealer(t, ctx, ns, hubA)
	b := startHealer(t, ctx, ns, hubB)
	for i := range 3 { // replica B has a history of its own
		hubB.ProcessingDelay("anthropic", i+1, time.Second, "overloaded")
	}
	srvA := httptest.NewServer(NewEventsHandler(hubA, StreamOptions{}))
	defer srvA.Close()
	srvB := httptest.NewServer(NewEventsHandler(hubB, StreamOptions{}))
	defer srvB.Close()

	respA, fromA := subscribe(t, ctx, srvA.URL+"?namespace="+ns, "")
	name, err := a.Trigger(ctx, refused(ns))
	if err != nil {
		t.Fatal(err)
	}
	playController(t, ns, name, addProgress(selfhealv1alpha1.PhaseDiagnosing, "checking pods", "checking endpoints"))
	var last string
	for _, want := range []string{EventHealingStart, EventHealingProgress, EventHealingProgress} {
		f := fromA.nextEvent()
		if f.event != want {
			t.Fatalf("replica A sent %s (%s), want %s", f.event, f.id, want)
		}
		last = f.id
	}
	if last != ns+"/"+name+"/2" {
		t.Fatalf("the second step's id is %q, want %s/%s/2", last, ns, name)
	}
	_ = respA.Body.Close() // the client loses replica A

	playController(t, ns, name, addProgress(selfhealv1alpha1.PhaseRemediating, "restarting deployment/tools"))
	playController(t, ns, name, finish(selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueNoReadyPods, selfhealv1alpha1.ReasonHealed, "tools is serving again"))
	waitUntil(t, func() bool { snap, _ := b.snapshot(ns, name); return snap != nil })

	respB, fromB := subscribe(t, ctx, srvB.URL+"?namespace="+ns, last)
	defer respB.Body.Close()
	want := []string{
		EventHealingProgress + " " + ns + "/" + name + "/3 restarting deployment/tools",
		EventHealingProgress + " " + ns + "/" + name + "/4 tools is serving again",
		EventHealingComplete + " " + ns + "/" + name + "/end tools is serving again",
	}
	for _, w := range want {
		f := fromB.nextEvent()
		if got := f.event + " " + f.id + " " + f.decode(t).Message; got != w {
			t.Fatalf("replica B resumed with %q, want %q", got, w)
		}
	}
}

// One incident, one record: the calls that failed during an outage keep being reported
// for a moment after its healing ended; they join that healing, and each reporter gets
// its outcome, instead of opening new incidents. Catches: a new HealingRequest for
// every report after the first healing ended (hundreds here).
func TestReportsJustAfterAHealingEndedJoinIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := freshNamespace(t)
	h := startHealer(t, ctx, ns, NewHub(HubOptions{}))
	srv := httptest.NewServer(NewReportHandler(h, StreamOptions{}))
	defer srv.Close()

	// The controller: it heals every request as soon as it sees it.
	loopCtx, stopLoop := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	defer func() { stopLoop(); <-loopDone }()
	go func() {
		defer close(loopDone)
		for loopCtx.Err() == nil {
			var list selfhealv1alpha1.HealingRequestList
			if err := cp.Client.List(loopCtx, &list, client.InNamespace(ns)); err == nil {
				for i := range list.Items {
					hr := &list.Items[i]
					if hr.Status.Phase.IsTerminal() {
						continue
					}
					now := metav1.Now()
					hr.Status.Phase = selfhealv1alpha1.PhaseHealed
					hr.Status.CompletionTime = &now
					hr.Status.Progress = append(hr.Status.Progress, selfhealv1alpha1.ProgressEntry{Time: now, Phase: selfhealv1alpha1.PhaseHealed, Message: "search is serving again"})
					meta.SetStatusCondition(&hr.Status.Conditions, metav1.Condition{Type: selfhealv1alpha1.ConditionReady, Status: metav1.ConditionTrue,
						Reason: selfhealv1alpha1.ReasonHealed, Message: "search is serving again"})
					_ = cp.Client.Status().Update(loopCtx, hr) // a conflict is retried on the next round
				}
			}
			select {
			case <-loopCtx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	const reports = 1000
	body := fmt.Sprintf(`{"namespace":%q,"service":"search","failureClass":"ConnectionRefused","message":"connection refused"}`, ns)
	names := make(chan string, reports)
	var wg sync.WaitGroup
	tick := time.NewTicker(3 * time.Second / reports) // spread over 3 s
	defer tick.Stop()
	for range reports {
		<-tick.C
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var rr ReportResponse
			if err := json.NewDecoder(resp.Body).Decode(&rr); err != nil || resp.StatusCode != http.StatusAccepted {
				t.Errorf("report: %d (%v)", resp.StatusCode, err)
				return
			}
			names <- rr.Request
		})
	}
	wg.Wait()
	close(names)
	distinct := map[string]int{}
	for n := range names {
		distinct[n]++
	}
	items := listRequests(t, ns)
	if len(items) != 1 || len(distinct) != 1 {
		t.Fatalf("%d HealingRequests for %d reports over 3 s, reporters got %v; want one incident", len(items), reports, distinct)
	}
	if items[0].Status.Phase != selfhealv1alpha1.PhaseHealed {
		t.Fatalf("the one request is %s: the fake controller did not heal it", items[0].Status.Phase)
	}

	// A reporter that takes the stream gets the outcome of the healing it joined.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Get("X-Healing-Request"); got != items[0].Name {
		t.Fatalf("a report after the healing got %q, want the ended %q", got, items[0].Name)
	}
	r := newSSEReader(t, resp.Body)
	var last sseFrame
	for f, ok := r.next(); ok; f, ok = r.next() {
		if f.event != "" {
			last = f
		}
	}
	if ev := last.decode(t); ev.Type != EventHealingComplete || ev.Request != items[0].Name {
		t.Fatalf("the joined report's stream ended with %+v, want the healing's outcome", ev)
	}
}

// Only failures seen before a healing ended join it: a call sent to the healed Service
// afterwards that fails again is a new incident (a relapse, or the next breakage),
// not the old healing's outcome. Catches: joining on arrival alone, which answers a
// new failure with an old, unrelated outcome and heals nothing for the window.
func TestOnlyFailuresSeenBeforeTheEndJoinIt(t *testing.T) {
	ctx, h, ns, first := reportedRefusal(t)
	end := time.Now()
	playController(t, ns, first, func(s *selfhealv1alpha1.HealingRequestStatus) {
		s.Phase = selfhealv1alpha1.PhaseHealed
		s.CompletionTime = &metav1.Time{Time: end}
	})
	waitUntil(t, func() bool { _, ok := h.recentlyEnded(ns+"/tools", time.Time{}); return ok })

	straggler := refused(ns)
	straggler.Seen = end.Add(-2 * time.Second) // sent during the outage, failed late
	if got, err := h.Trigger(ctx, straggler); err != nil || got != first {
		t.Fatalf("a failure seen before the end got %q (%v), want the ended %q", got, err, first)
	}
	relapse := refused(ns)
	relapse.Seen = time.Now() // sent to the Service this gateway has seen healed
	got, err := h.Trigger(ctx, relapse)
	if err != nil || got == first {
		t.Fatalf("a failure seen after the end got %q (%v), want a new incident", got, err)
	}
	if n := len(listRequests(t, ns)); n != 2 {
		t.Fatalf("%d HealingRequests, want 2", n)
	}
}

// Two healings of one Service that end within one second, as the e2e suite's
// back-to-back scenarios do: a failure seen after the second ended is a new incident,
// never the first one's straggler. Catches: joining any ended request whose
// completionTime (whole seconds, plus a second of slack) is after the failure, and
// joining the name that follows an older request (creation timestamps tie within the
// second): the e2e flake where scenario 8's call got scenario 6's ImagePullBackOff.
func TestAFailureAfterALaterHealingEndedJoinsNoEarlierOne(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := newEndings(t, ctx)
	first := e.failAt(e.now.Add(-3 * time.Second))
	e.heal(first, e.now.Add(-2*time.Second))
	second := e.failAt(e.now.Add(100 * time.Millisecond))
	if second == first {
		t.Fatalf("a failure seen after %s ended joined it", first)
	}
	e.heal(second, e.now.Add(-time.Second))

	third := e.failAt(e.now.Add(200 * time.Millisecond))
	if third == first || third == second {
		t.Fatalf("a failure seen after both healings ended joined %s (first %s, second %s); want a new incident", third, first, second)
	}
	if n := len(listRequests(t, e.ns)); n != 3 {
		t.Fatalf("%d HealingRequests, want 3", n)
	}
}

// The same when the name that follows the newest finished request (creation time,
// then name: timestamps tie within the second) is an earlier incident's successor
// that already ended: that successor is not the last incident, so a failure seen
// after the last one ended does not join it. Catches: joining the request found at
// the computed name (AlreadyExists) without asking whether it is the last incident.
func TestAFailureJoinsNoEarlierIncidentFoundByName(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := newEndings(t, ctx)
	// Named so that, created within one second, "tools-zz-first" sorts newest.
	first := e.create("tools-zz-first")
	e.heal(first, e.now.Add(-3*time.Second))
	successor := e.create(RequestName("tools", first))
	e.heal(successor, e.now.Add(-2*time.Second))
	last := e.create("tools-00-last")
	e.heal(last, e.now.Add(-time.Second))

	got := e.failAt(e.now.Add(200 * time.Millisecond))
	if got == first || got == successor || got == last {
		t.Fatalf("a failure seen after %s (the last incident) ended joined %s; want a new incident", last, got)
	}
}

// endings plays a target's incidents ending within one second, on a healer whose
// clock stands half a second into that second (both completion times read as its
// start, plus the second of slack a listed request gets).
type endings struct {
	t   *testing.T
	ctx context.Context
	ns  string
	now time.Time
	h   *Healer
}

func newEndings(t *testing.T, ctx context.Context) *endings {
	ns := freshNamespace(t)
	now := time.Now().Truncate(time.Second).Add(500 * time.Millisecond)
	h := startHealerWith(t, ctx, ns, Options{Hub: NewHub(HubOptions{}), Clock: clocktesting.NewFakeClock(now)})
	return &endings{t: t, ctx: ctx, ns: ns, now: now, h: h}
}

// failAt triggers a failure of service tools seen at seen and returns its request.
func (e *endings) failAt(seen time.Time) string {
	e.t.Helper()
	f := refused(e.ns)
	f.Seen = seen
	name, err := e.h.Trigger(e.ctx, f)
	if err != nil {
		e.t.Fatal(err)
	}
	return name
}

// create makes a request for tools named name, as another replica would.
func (e *endings) create(name string) string {
	e.t.Helper()
	createRequest(e.t, e.ctx, e.ns, name)
	return name
}

// createRequest creates a request for service tools named name, as a gateway does.
func createRequest(t *testing.T, ctx context.Context, ns, name string) {
	t.Helper()
	hr := &selfhealv1alpha1.HealingRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: selfhealv1alpha1.HealingRequestSpec{Target: selfhealv1alpha1.HealingTarget{Service: "tools"},
			Trigger: selfhealv1alpha1.HealingTrigger{Source: selfhealv1alpha1.TriggerSourceGateway, FailureClass: selfhealv1alpha1.FailureConnectionRefused}},
	}
	if err := cp.Client.Create(ctx, hr); err != nil {
		t.Fatal(err)
	}
}

// heal ends the request Healed, started at started, completed "now", and waits until
// the healer saw it end (it is then the target's latest ended one).
func (e *endings) heal(name string, started time.Time) {
	e.t.Helper()
	playController(e.t, e.ns, name, func(s *selfhealv1alpha1.HealingRequestStatus) {
		s.Phase = selfhealv1alpha1.PhaseHealed
		s.StartTime = ptr.To(metav1.NewMicroTime(started))
		s.CompletionTime = &metav1.Time{Time: e.now}
	})
	waitUntil(e.t, func() bool { got, ok := e.h.recentlyEnded(e.ns+"/tools", time.Time{}); return ok && got == name })
}

// A replica that starts after a healing ended (it was restarting while the healing
// ended) keeps that healing's events for resume, as the replicas that saw it do: a
// client resumes with the Last-Event-ID it read elsewhere and gets the rest and the
// end, nothing missed, and nothing of another healing the replica replayed after it
// (its start-up order is the list's, not the healings'). History older than
// ResumableHistory is remembered, not replayed. Catches: a restarted gateway
// answering events_missed, and never the end, to a client that followed the healing
// before the restart; or sending it the other healing's steps as if they came next.
func TestAReplicaStartedAfterAHealingEndedResumesIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	ended := func(name string, completed time.Time) {
		t.Helper()
		createRequest(t, ctx, ns, name)
		playController(t, ns, name, func(s *selfhealv1alpha1.HealingRequestStatus) {
			addProgress(selfhealv1alpha1.PhaseHealed, "Received", "Diagnosed NoPods", "Healed")(s)
			s.CompletionTime = &metav1.Time{Time: completed}
		})
	}
	ended("recent", time.Now())
	ended("other", time.Now()) // replayed before or after "recent": the list decides
	ended("old", time.Now().Add(-2*ResumableHistory))

	hub := NewHub(HubOptions{})
	startHealer(t, ctx, ns, hub)
	for _, name := range []string{"recent", "other"} {
		sub, backlog, missed := hub.Resume(Filter{Service: "tools"}, eventID(ns, name, 1))
		sub.Close()
		var got []string
		for _, ev := range backlog {
			got = append(got, ev.ID)
		}
		want := []string{eventID(ns, name, 2), eventID(ns, name, 3), ns + "/" + name + "/end"}
		if missed || !slices.Equal(got, want) {
			t.Fatalf("resume after %s/%s/1 on a replica started after the end: missed %t, events %v; want %v", ns, name, missed, got, want)
		}
		if backlog[len(backlog)-1].Type != EventHealingComplete {
			t.Fatalf("the resumed stream ends with %s, want %s", backlog[len(backlog)-1].Type, EventHealingComplete)
		}
	}
	old, oldBacklog, oldMissed := hub.Resume(Filter{Request: "old"}, eventID(ns, "old", 1))
	defer old.Close()
	if !oldMissed || len(oldBacklog) != 0 {
		t.Fatalf("history older than %s was replayed: missed %t, %d events", ResumableHistory, oldMissed, len(oldBacklog))
	}
}

// Held counts the calls following a request while they wait, and none once it has
// ended. Catches: the /ui page's held calls never moving, or never going back.
func TestHeldCountsTheWaitingCalls(t *testing.T) {
	ctx, h, ns, name := reportedRefusal(t)
	first, second := h.Wait(ctx, ns, name), h.Follow(ctx, ns, name, true)
	waitUntil(t, func() bool { return h.Held(ns, name) == 2 })
	if h.Held(ns, "other") != 0 {
		t.Fatal("another request counts the calls")
	}
	playController(t, ns, name, finish(selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueNoPods, selfhealv1alpha1.ReasonHealed, "serving"))
	for range first {
	}
	for range second {
	}
	waitUntil(t, func() bool { return h.Held(ns, name) == 0 })
}

// TestLatestEndedIncidentIsTheLaterStart: two healings of one Service that ended in
// the same second (completionTime has whole seconds) are seen end in either order;
// the one remembered, which a failure then joins, is the later incident by start, as
// the API server's list orders them. Catches: keeping the end seen last on a tie (at
// start-up that is list order, and a failure then joined the earlier incident).
func TestLatestEndedIncidentIsTheLaterStart(t *testing.T) {
	end := metav1.NewTime(time.Now().Truncate(time.Second))
	ended := func(name string, start time.Time) *selfhealv1alpha1.HealingRequest {
		return &selfhealv1alpha1.HealingRequest{
			ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: end},
			Status: selfhealv1alpha1.HealingRequestStatus{Phase: selfhealv1alpha1.PhaseHealed,
				StartTime: ptr.To(metav1.NewMicroTime(start)), CompletionTime: &end},
		}
	}
	// Names sort against starts, so the creation-name fallback cannot pass for it.
	first, second := ended("z-first", end.Add(10*time.Millisecond)), ended("a-second", end.Add(400*time.Millisecond))
	for _, order := range [][]*selfhealv1alpha1.HealingRequest{{first, second}, {second, first}} {
		h := New(Options{JoinEndedWithin: time.Minute})
		for _, hr := range order {
			h.noteEndedLocked("ns/sandfly", hr, true)
		}
		if got, ok := h.recentlyEnded("ns/sandfly", time.Time{}); !ok || got != second.Name {
			t.Errorf("seen ending %s then %s: joins %q (%v), want %s", order[0].Name, order[1].Name, got, ok, second.Name)
		}
	}
}
