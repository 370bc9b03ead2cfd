package controller_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controller"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
)

// laggingPods observes as a pod cache behind the other caches does: until it has
// served lagFor observations in which every pod is ready, it reports the pods not
// ready. Informers are not ordered with one another, so the event that the last pod
// became ready (on the EndpointSlice, the Deployment) can be handled before the pod
// cache shows it.
type laggingPods struct {
	diagnostics.Engine
	namespace string
	lagFor    int64
	ready     atomic.Int64 // observations of the target in which every pod was ready
}

func (l *laggingPods) Observe(ctx context.Context, t diagnostics.Target) (*diagnostics.Snapshot, error) {
	snap, err := l.Engine.Observe(ctx, t)
	if err != nil || snap == nil || t.Namespace != l.namespace || len(snap.Pods) == 0 {
		return snap, err
	}
	for i := range snap.Pods {
		if !diagnostics.PodReady(&snap.Pods[i]) {
			return snap, nil
		}
	}
	if l.ready.Add(1) > l.lagFor {
		return snap, nil
	}
	for i := range snap.Pods {
		for j := range snap.Pods[i].Status.Conditions {
			if c := &snap.Pods[i].Status.Conditions[j]; c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
				c.Status = corev1.ConditionFalse
			}
		}
	}
	return snap, nil
}

// use makes the manager's controllers diagnose through l, over the default engine.
func (l *laggingPods) use(t testing.TB) func(ctrl.Manager, *controller.Options) {
	return func(mgr ctrl.Manager, o *controller.Options) {
		kube, err := kubernetes.NewForConfig(mgr.GetConfig())
		if err != nil {
			t.Fatal(err)
		}
		g := diagnostics.NewGatherer(mgr.GetClient(), kube, o.Clock, diagnostics.Options{UseEventIndex: true})
		l.Engine = diagnostics.NewEngine(g, diagnostics.DefaultChecks()...)
		o.Diagnoser = l
	}
}

// TestVerifyingLooksAgainWithoutAnEvent: a verification that read a pod cache behind
// the event that woke it is not left waiting for an event that already came; it looks
// again on its own and ends Healed long before the deadline. Catches: Verifying that
// only waits for watch events (the healing then sits in Verifying until its deadline,
// as once seen after a leader handover).
func TestVerifyingLooksAgainWithoutAnEvent(t *testing.T) {
	ns := newNamespace(t)
	// Five looks at the ready state are reported not ready: more than the watch
	// events that follow a scale-up bring, so only looking again gets past them.
	lag := &laggingPods{namespace: ns, lagFor: 5}
	defer startManager(t, lag.use(t))()
	app(t, ns, "sandfly", 0)
	policy(t, ns)
	// Healed well inside the 2-minute deadline (a loaded machine gets 90 s): looking
	// again ended it, not the deadline (which would end it Failed).
	got := terminalWithin(t, request(t, ns, "sandfly"), 90*time.Second)
	g := NewWithT(t)
	g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed), "progress: %v", got.Status.Progress)
	g.Expect(lag.ready.Load()).To(BeNumerically(">", lag.lagFor), "healed only once the pods were seen ready")
}

// statusWrites counts the status patches of HealingRequests: per request, those the
// API server applied, and in all, those it refused with a conflict.
type statusWrites struct {
	client.Client
	mu        sync.Mutex
	n         map[string]int
	conflicts atomic.Int32
}

func countStatusWrites(c client.Client) *statusWrites {
	return &statusWrites{Client: c, n: map[string]int{}}
}

func (s *statusWrites) Status() client.SubResourceWriter {
	return statusWriteCounter{s.Client.Status(), s}
}

func (s *statusWrites) of(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[name]
}

type statusWriteCounter struct {
	client.SubResourceWriter
	s *statusWrites
}

func (c statusWriteCounter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	err := c.SubResourceWriter.Patch(ctx, obj, patch, opts...)
	if _, ok := obj.(*selfhealv1alpha1.HealingRequest); ok {
		switch {
		case err == nil:
			c.s.mu.Lock()
			c.s.n[obj.GetName()]++
			c.s.mu.Unlock()
		case apierrors.IsConflict(err):
			c.s.conflicts.Add(1)
		}
	}
	return err
}

// TestVerifyingWritesOncePerAttempt: the rollout of a restart of six crashlooping pods
// changes what verification awaits with every pod, and the healing still writes its
// status three times at most: the action with its outcome, the first wait, Healed.
// The manager's clock stands still, so a rollout slowed by a loaded machine never
// reaches the quiet period after which the wait is written (its own test's subject).
// Catches: a status write for every change of the awaited counts, which loads the
// API server in a burst of healings.
func TestVerifyingWritesOncePerAttempt(t *testing.T) {
	var writes *statusWrites
	defer startManager(t, func(mgr ctrl.Manager, o *controller.Options) {
		writes = countStatusWrites(mgr.GetClient())
		o.Client = writes
		o.Clock = clocktesting.NewFakePassiveClock(time.Now())
	})()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 6)
	policy(t, ns)
	crashLoop(t, ns, "sandfly", 6, nil)

	hr := terminal(t, request(t, ns, "sandfly"))
	g := NewWithT(t)
	g.Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed), "progress: %v", hr.Status.Progress)
	g.Expect(executed(hr)).To(HaveLen(1))
	g.Expect(writes.of(hr.Name)).To(BeNumerically("<=", 3), "conditions: %v", hr.Status.Conditions)
}

// TestLongVerificationSaysWhatItAwaits: a verification that waits longer than a
// rollout usually takes writes what it awaits, once: a person looking into a slow
// healing sees it. The manager runs on a clock that stands still until the test moves
// it. Catches: the awaited written before the wait was long (a write per healing on a
// busy API server), or never written.
func TestLongVerificationSaysWhatItAwaits(t *testing.T) {
	ns := newNamespace(t)
	lag := &laggingPods{namespace: ns, lagFor: 1 << 30} // the pods never look ready
	var writes *statusWrites
	still := clocktesting.NewFakePassiveClock(time.Now())
	defer startManager(t, lag.use(t), func(mgr ctrl.Manager, o *controller.Options) {
		writes = countStatusWrites(mgr.GetClient())
		o.Client = writes
		o.Clock = still
	})()
	app(t, ns, "sandfly", 0)
	policy(t, ns)
	hr := request(t, ns, "sandfly")
	verified := func(g Gomega) *metav1.Condition {
		got := &selfhealv1alpha1.HealingRequest{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(hr), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseVerifying))
		c := condition(got, selfhealv1alpha1.ConditionVerified)
		g.Expect(c).NotTo(BeNil())
		return c
	}
	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		g.Expect(verified(g).Status).To(Equal(metav1.ConditionUnknown))
		g.Expect(lag.ready.Load()).To(BeNumerically(">=", 3), "looked at the ready pods three times")
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
	g.Expect(verified(g).Status).To(Equal(metav1.ConditionUnknown), "nothing written while the wait is short")
	g.Expect(writes.of(hr.Name)).To(Equal(1), "one write: the action, its outcome and the wait")

	// Far past the controller's quiet period (10 s), well inside the 2-minute deadline.
	still.SetTime(still.Now().Add(30 * time.Second))
	g.Eventually(func(g Gomega) {
		c := verified(g)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(selfhealv1alpha1.ReasonWaitingForRollout))
		g.Expect(c.Message).To(ContainSubstring("ready"))
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
	seen := lag.ready.Load()
	g.Eventually(lag.ready.Load).WithTimeout(eventually).WithPolling(poll).Should(BeNumerically(">=", seen+2), "looked twice more")
	g.Expect(writes.of(hr.Name)).To(Equal(2), "what it awaits, written once")
}
