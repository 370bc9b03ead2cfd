package controller_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controller"
)

// The HealingRequest controller under reads that lag (a cache behind the API server)
// or fail (an API server that refuses a list): what it decides from them.

// frozenPolicies is a cache that stopped following one namespace's HealingPolicies:
// once frozen, its lists there return the copies it froze, whatever the API server
// holds since (older resourceVersions, older ledgers).
type frozenPolicies struct {
	client.Client
	namespace string
	mu        sync.Mutex
	frozen    []selfhealv1alpha1.HealingPolicy
}

func (f *frozenPolicies) freeze(t testing.TB) {
	t.Helper()
	var list selfhealv1alpha1.HealingPolicyList
	if err := k8s.List(context.Background(), &list, client.InNamespace(f.namespace)); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = list.Items
}

func (f *frozenPolicies) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := f.Client.List(ctx, list, opts...); err != nil {
		return err
	}
	l, ok := list.(*selfhealv1alpha1.HealingPolicyList)
	if !ok || (&client.ListOptions{}).ApplyOptions(opts).Namespace != f.namespace {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen != nil {
		l.Items = make([]selfhealv1alpha1.HealingPolicy, len(f.frozen))
		for i := range f.frozen {
			f.frozen[i].DeepCopyInto(&l.Items[i])
		}
	}
	return nil
}

// stalePolicies starts a manager whose HealingRequest controller reads the policies
// of a new namespace through a frozenPolicies.
func stalePolicies(t *testing.T) (*frozenPolicies, func()) {
	frozen := &frozenPolicies{namespace: newNamespace(t)}
	stop := startManager(t, func(mgr ctrl.Manager, o *controller.Options) {
		frozen.Client = mgr.GetClient()
		o.Client = frozen
	})
	return frozen, stop
}

// setLedger replaces the namespace ledger, as the API server holds it.
func setLedger(t testing.TB, ns string, ledger []selfhealv1alpha1.LedgerEntry) {
	t.Helper()
	NewWithT(t).Eventually(func() error {
		p := &selfhealv1alpha1.HealingPolicy{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "heal"}, p); err != nil {
			return err
		}
		p.Status.Ledger = ledger
		return k8s.Status().Update(context.Background(), p)
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
}

// TestStaleCachedLedgerRefusesNothing: the cached ledger still shows the storm limit
// reached by an entry that has since been released; the request is reserved from the
// API server's ledger and heals. Catches: a refusal decided on the cached copy (it
// writes nothing, so no resourceVersion check would ever correct it).
func TestStaleCachedLedgerRefusesNothing(t *testing.T) {
	frozen, stop := stalePolicies(t)
	defer stop()
	ns := frozen.namespace
	app(t, ns, "sandfly", 0)
	policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) {
		p.Spec.CircuitBreaker = &selfhealv1alpha1.CircuitBreaker{MaxActionsPerTarget: ptr.To[int32](1), NamespaceMaxActions: ptr.To[int32](1)}
	})
	setLedger(t, ns, []selfhealv1alpha1.LedgerEntry{{
		Service: "other", Workload: selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: "other"},
		Action: selfhealv1alpha1.ActionScaleFromZero, Request: "other-x1", Attempt: 1, Policy: "heal",
		ReservedAt: metav1.NewMicroTime(clk.Now()),
	}})
	frozen.freeze(t)
	setLedger(t, ns, nil) // released since

	got := terminal(t, request(t, ns, "sandfly"))
	g := NewWithT(t)
	g.Expect(readyReasonOf(got)).To(Equal(selfhealv1alpha1.ReasonHealed), "progress: %v", got.Status.Progress)
	g.Expect(scaleWrites(t, ns)).To(Equal(map[string]int64{"sandfly": 1}))
	g.Expect(ledgerOf(t, ns)).To(ConsistOf(HaveField("Request", got.Name)))
}

// TestStaleCachedLedgerOvershootsNothing: the cached ledger stays empty while requests
// for five broken Deployments fill the real one, storm limit 2; exactly two are
// scaled, in each of three rounds. Catches: a reservation written over a ledger it did
// not read (an update without the resourceVersion of the copy it counted).
func TestStaleCachedLedgerOvershootsNothing(t *testing.T) {
	const targets, limit = 5, 2
	for round := range 3 {
		func() {
			frozen, stop := stalePolicies(t)
			defer stop()
			ns := frozen.namespace
			for i := range targets {
				app(t, ns, fmt.Sprintf("mcp-%02d", i), 0)
			}
			policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) {
				p.Spec.CircuitBreaker = &selfhealv1alpha1.CircuitBreaker{MaxActionsPerTarget: ptr.To[int32](1), NamespaceMaxActions: ptr.To[int32](limit)}
			})
			frozen.freeze(t)
			reqs := make([]*selfhealv1alpha1.HealingRequest, targets)
			var wg sync.WaitGroup
			for i := range reqs {
				wg.Go(func() { reqs[i] = request(t, ns, fmt.Sprintf("mcp-%02d", i)) })
			}
			wg.Wait()
			healed := 0
			for _, hr := range reqs {
				if got := terminal(t, hr); readyReasonOf(got) == selfhealv1alpha1.ReasonHealed {
					healed++
				}
			}
			written := int64(0)
			for _, n := range scaleWrites(t, ns) {
				written += n
			}
			if written != limit || healed != limit || len(ledgerOf(t, ns)) != limit {
				t.Fatalf("round %d: %d scaled, %d healed, %d ledger entries; want exactly %d", round, written, healed, len(ledgerOf(t, ns)), limit)
			}
		}()
	}
}

// failingLists fails the next uncached lists of HealingRequests in one namespace, as
// an overloaded API server would.
type failingLists struct {
	client.Reader
	namespace string
	fail      atomic.Int32 // lists still to fail
}

func (f *failingLists) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*selfhealv1alpha1.HealingRequestList); ok && (&client.ListOptions{}).ApplyOptions(opts).Namespace == f.namespace &&
		f.fail.Add(-1) >= 0 {
		return apierrors.NewServiceUnavailable("injected: too many requests")
	}
	return f.Reader.List(ctx, list, opts...)
}

// TestFailedDuplicateCheckIsCheckedAgain: while a healing of a target is active (held
// in Verifying), a second request's duplicate check fails three times; the second
// request stays Pending, is checked again, and ends a duplicate of the first, with
// none of the diagnosis its failed passes made meanwhile. Catches: a pass that writes
// what it diagnosed while the duplicate check failed (the request then leaves Pending
// unchecked and heals the target a second time), and a duplicate that keeps findings.
func TestFailedDuplicateCheckIsCheckedAgain(t *testing.T) {
	ns := newNamespace(t)
	lag := &laggingPods{namespace: ns, lagFor: 1 << 40} // the first healing stays in Verifying
	lists := &failingLists{namespace: ns}
	defer startManager(t, lag.use(t), func(mgr ctrl.Manager, o *controller.Options) {
		lists.Reader = mgr.GetAPIReader()
		o.APIReader = lists
	})()
	app(t, ns, "sandfly", 0)
	policy(t, ns)
	first := request(t, ns, "sandfly")
	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		got := &selfhealv1alpha1.HealingRequest{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(first), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseVerifying))
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())

	// Requests are ordered by creationTimestamp, in whole seconds, then by name: the
	// second must be created in a later second to follow the first.
	g.Eventually(func() bool { return time.Now().After(first.CreationTimestamp.Add(time.Second)) }).
		WithTimeout(eventually).WithPolling(poll).Should(BeTrue())
	lists.fail.Store(3)
	got := terminal(t, request(t, ns, "sandfly"))
	g.Expect(lists.fail.Load()).To(BeNumerically("<", 0), "every injected failure was met")
	g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseSkipped), "progress: %v", got.Status.Progress)
	g.Expect(got.Status.DuplicateOf).To(Equal(first.Name))
	g.Expect(got.Status.Findings).To(BeEmpty())
	g.Expect(got.Status.Issue).To(BeEmpty())
	g.Expect(condition(got, selfhealv1alpha1.ConditionDiagnosed)).To(BeNil())
	g.Expect(got.Status.Actions).To(BeEmpty())
	g.Expect(scaleWrites(t, ns)).To(Equal(map[string]int64{"sandfly": 1}), "the first healing's scale-up only")
}

// conflictCount counts the status writes of HealingRequests that the API server
// refused with a conflict.
type conflictCount struct {
	client.Client
	conflicts atomic.Int32
}

func (c *conflictCount) Status() client.SubResourceWriter {
	return &conflictCountWriter{c.Client.Status(), c}
}

type conflictCountWriter struct {
	client.SubResourceWriter
	c *conflictCount
}

func (w *conflictCountWriter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	err := w.SubResourceWriter.Patch(ctx, obj, patch, opts...)
	if _, ok := obj.(*selfhealv1alpha1.HealingRequest); ok && apierrors.IsConflict(err) {
		w.c.conflicts.Add(1)
	}
	return err
}

// TestNoReconcileWorksFromBeforeItsOwnWrite heals ten broken Deployments at once, three
// times over: no status write of a HealingRequest conflicts. A reconcile woken by the
// event of an older write of the same request (the intent, say, which the reconcile
// that recorded it also executed) once ran on the cached copy from before the latest
// write, executed the intent again and had its status write refused. Catches: a
// reconcile that acts on a cached request older than its own last write.
func TestNoReconcileWorksFromBeforeItsOwnWrite(t *testing.T) {
	counted := &conflictCount{}
	defer startManager(t, func(mgr ctrl.Manager, o *controller.Options) {
		counted.Client = mgr.GetClient()
		o.Client = counted
		o.MaxConcurrentReconciles = 10
	})()
	const targets = 10
	for round := range 3 {
		ns := newNamespace(t)
		policy(t, ns)
		for i := range targets {
			app(t, ns, fmt.Sprintf("mcp-%02d", i), 0)
		}
		reqs := make([]*selfhealv1alpha1.HealingRequest, targets)
		var wg sync.WaitGroup
		for i := range reqs {
			wg.Go(func() { reqs[i] = request(t, ns, fmt.Sprintf("mcp-%02d", i)) })
		}
		wg.Wait()
		for _, hr := range reqs {
			if got := terminal(t, hr); got.Status.Phase != selfhealv1alpha1.PhaseHealed {
				t.Fatalf("round %d: %s ended %s: %v", round, got.Name, got.Status.Phase, got.Status.Progress)
			}
		}
		if n := counted.conflicts.Load(); n != 0 {
			t.Fatalf("round %d: %d status writes conflicted", round, n)
		}
	}
}
