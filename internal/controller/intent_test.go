package controller_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controller"
)

// The ledger reservation is the attempt's intent: the pass that reserved acts at once
// and records intent and outcome in one status write; a reservation made and not
// recorded is adopted by the next reconcile, never acted on anew; a released one
// never acts again.

// scaleHook replaces the executor's scale writes with write.
type scaleHook struct {
	client.Client
	write func(ctx context.Context) error
}

func (h scaleHook) SubResource(sub string) client.SubResourceClient {
	c := h.Client.SubResource(sub)
	if sub != "scale" {
		return c
	}
	return scaleHookWriter{c, h.write}
}

type scaleHookWriter struct {
	client.SubResourceClient
	write func(ctx context.Context) error
}

func (w scaleHookWriter) Update(ctx context.Context, _ client.Object, _ ...client.SubResourceUpdateOption) error {
	return w.write(ctx)
}

// TestActingNeedsNoStatusWriteBeforeIt: every status write that records an intent not
// yet executed is refused, and the healing still acts once and heals: the attempt acts
// in the pass that reserved it, its intent and outcome written together, started at
// the reservation's time. Catches: the intent written (and waited for) before acting.
func TestActingNeedsNoStatusWriteBeforeIt(t *testing.T) {
	clk.Reset()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 0)
	policy(t, ns)
	defer blockStatus(t, ns, "intent", intentOpen)()
	defer startManager(t)()

	got := terminal(t, request(t, ns, "sandfly"))
	expectStatusInvariants(t, got)
	g := NewWithT(t)
	g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed), "progress: %v", got.Status.Progress)
	g.Expect(scaleWrites(t, ns)["sandfly"]).To(Equal(int64(1)))
	ledger := ledgerOf(t, ns)
	g.Expect(ledger).To(HaveLen(1))
	g.Expect(executed(got)).To(ConsistOf(And(
		HaveField("Outcome", selfhealv1alpha1.OutcomeSucceeded),
		HaveField("StartedAt", ledger[0].ReservedAt),
	)))
}

// diesBeforeActing runs a manager on a healing of a Deployment scaled to zero (app
// sandfly) whose scale write never returns, and stops it there: it has reserved the
// action and neither acted nor written anything since. It returns the namespace and
// the request. frozen, when given, is frozen on the namespace before the reservation.
func diesBeforeActing(t *testing.T, frozen *frozenPolicies) (string, *selfhealv1alpha1.HealingRequest) {
	t.Helper()
	clk.Reset()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 0)
	policy(t, ns)
	if frozen != nil {
		frozen.namespace = ns
		frozen.freeze(t)
	}
	reached := make(chan struct{})
	var once sync.Once
	stop := startManager(t, func(mgr ctrl.Manager, o *controller.Options) {
		o.Client = scaleHook{mgr.GetClient(), func(ctx context.Context) error {
			once.Do(func() { close(reached) })
			<-ctx.Done()
			return ctx.Err()
		}}
	})
	hr := request(t, ns, "sandfly")
	select {
	case <-reached:
	case <-time.After(eventually):
		t.Fatal("the manager never tried to scale")
	}
	stop()
	g := NewWithT(t)
	g.Expect(ledgerOf(t, ns)).To(HaveLen(1))
	now := &selfhealv1alpha1.HealingRequest{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(hr), now)).To(Succeed())
	g.Expect(now.Status.Actions).To(BeEmpty(), "the reservation is all that was written")
	g.Expect(scaleWrites(t, ns)["sandfly"]).To(BeZero())
	return ns, hr
}

// TestDiedBeforeActingIsAdopted: a manager reserved the action and died before acting
// or recording anything. The next manager adopts the reservation: it scales once, with
// the reservation's time, and heals; the ledger still holds one entry. The cached
// ledger shows the reservation (adopt) and the ledger update would find it (reserve):
// it catches the reservation missed by both (a second entry, a new action for the
// same attempt), or found and released.
func TestDiedBeforeActingIsAdopted(t *testing.T) {
	ns, hr := diesBeforeActing(t, nil)
	defer startManager(t)()
	got := terminal(t, hr)
	expectStatusInvariants(t, got)
	g := NewWithT(t)
	g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed), "progress: %v", got.Status.Progress)
	g.Expect(scaleWrites(t, ns)["sandfly"]).To(Equal(int64(1)))
	ledger := ledgerOf(t, ns)
	g.Expect(ledger).To(ConsistOf(HaveField("Released", false)))
	g.Expect(executed(got)).To(ConsistOf(And(
		HaveField("Outcome", selfhealv1alpha1.OutcomeSucceeded),
		HaveField("Attempt", int32(1)),
		HaveField("StartedAt", ledger[0].ReservedAt),
	)))
	g.Expect(got.Status.Issue).To(Equal(selfhealv1alpha1.IssueNoPods))
}

// TestUnrecordedReservationStaysCounted: a manager reserved the action and died
// before acting; meanwhile a person scales the Deployment up. The next manager's cache
// does not show the reservation, so it finds the service serving and ends the request
// without recording an action. It cannot tell whether that reservation acted: it stays
// counted, one too many rather than one too few. Catches: a reservation the status
// never recorded released as "never acted" (a slot freed that an action may hold).
func TestUnrecordedReservationStaysCounted(t *testing.T) {
	frozen := &frozenPolicies{}
	ns, hr := diesBeforeActing(t, frozen)
	dep := getDeployment(t, ns, "sandfly")
	patch := client.MergeFrom(dep.DeepCopy())
	dep.Spec.Replicas = ptr.To[int32](1)
	if err := k8s.Patch(context.Background(), dep, patch); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, "sandfly", 1)

	defer startManager(t, func(mgr ctrl.Manager, o *controller.Options) {
		frozen.Client = mgr.GetClient()
		o.Client = frozen
	})()
	got := terminal(t, hr)
	expectStatusInvariants(t, got)
	g := NewWithT(t)
	g.Expect(executed(got)).To(BeEmpty(), "progress: %v", got.Status.Progress)
	g.Expect(getDeployment(t, ns, "sandfly").Generation).To(Equal(int64(2)), "only the person's scale-up")
	g.Consistently(func() []selfhealv1alpha1.LedgerEntry { return ledgerOf(t, ns) }).
		WithTimeout(3 * time.Second).WithPolling(poll).Should(ConsistOf(HaveField("Released", false)))
}

// staleRequest is a manager's view that stopped at one copy of a request (a deposed
// leader's cache, a partition): its Gets of the request return that copy. Its status
// writes are counted.
type staleRequest struct {
	*statusWrites
	copy *selfhealv1alpha1.HealingRequest
}

func (s staleRequest) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if hr, ok := obj.(*selfhealv1alpha1.HealingRequest); ok && key == client.ObjectKeyFromObject(s.copy) {
		s.copy.DeepCopyInto(hr)
		return nil
	}
	return s.statusWrites.Get(ctx, key, obj, opts...)
}

// TestReleasedReservationNeverActsAgain: a healing's scale is refused, so it ends
// without acting and its reservation is released. A manager that still sees the
// request as it was created then reconciles it: the workload is still at zero and the
// plan is the same, but the attempt is reserved already (released, not removed), so
// it adopts that reservation, whose intent the API server refuses to record over the
// newer status: it never scales. Catches: a release that removes the entry (the late
// reconcile reserves the attempt afresh and acts at once).
func TestReleasedReservationNeverActsAgain(t *testing.T) {
	clk.Reset()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 0)
	policy(t, ns)
	stop := startManager(t, func(mgr ctrl.Manager, o *controller.Options) {
		o.Client = scaleHook{mgr.GetClient(), func(context.Context) error {
			return apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments/scale"}, "sandfly", errors.New("refused by the test"))
		}}
	})
	created := request(t, ns, "sandfly")
	ended := terminal(t, created)
	g := NewWithT(t)
	g.Expect(ended.Status.Phase).To(Equal(selfhealv1alpha1.PhaseManualInterventionRequired), "progress: %v", ended.Status.Progress)
	g.Eventually(func(g Gomega) {
		g.Expect(ledgerOfG(g, ns)).To(ConsistOf(HaveField("Released", true)))
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
	stop()

	var late *statusWrites
	defer startManager(t, func(mgr ctrl.Manager, o *controller.Options) {
		late = countStatusWrites(mgr.GetClient())
		o.Client = staleRequest{late, created}
	})()
	g.Eventually(late.conflicts.Load).WithTimeout(eventually).WithPolling(poll).Should(BeNumerically(">=", 2),
		"the late reconcile tried, and was refused, twice")
	g.Expect(scaleWrites(t, ns)["sandfly"]).To(BeZero())
	g.Expect(ledgerOf(t, ns)).To(ConsistOf(HaveField("Released", true)))
	now := &selfhealv1alpha1.HealingRequest{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(created), now)).To(Succeed())
	g.Expect(now.Status).To(Equal(ended.Status))
}
