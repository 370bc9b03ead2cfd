package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
	"github.com/selfheal-dev/selfheal/internal/remediation"
)

// The controller's own RBAC (its cluster-wide role is generated from these markers and
// those of internal/diagnostics, all read-only on workloads; the writes of remediation
// are granted per namespace, see internal/remediation). Each marker's "rbac:" line says
// why it is needed; hack/rbaccomments copies it above the generated rule.
//
// rbac: HealingRequests are the objects reconciled; delete trims them to the retention limit.
// +kubebuilder:rbac:groups=selfheal.dev,resources=healingrequests,verbs=get;list;watch;delete
// rbac: The controller records a HealingRequest's phase, conditions and actions in its status.
// +kubebuilder:rbac:groups=selfheal.dev,resources=healingrequests/status,verbs=get;patch;update
// rbac: HealingPolicies are read to gate remediation.
// +kubebuilder:rbac:groups=selfheal.dev,resources=healingpolicies,verbs=get;list;watch
// rbac: The controller records a policy's mode and its namespace's action ledger (updated with optimistic concurrency) in its status.
// +kubebuilder:rbac:groups=selfheal.dev,resources=healingpolicies/status,verbs=get;patch;update
// rbac: The controller emits events (events.k8s.io) on transitions and actions.
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// HealingRequestReconciler drives one HealingRequest from Pending to a terminal phase.
type HealingRequestReconciler struct {
	Client client.Client
	// APIReader reads uncached, where a stale cache could cause a double action.
	APIReader client.Reader
	Clock     clock.PassiveClock
	Diagnoser diagnostics.Engine
	Executor  *remediation.Executor
	Recorder  recorder.EventRecorder
	Caller    Caller
	// written holds, per request, the resourceVersion of this process's last status
	// write until the cache shows it (see Reconcile).
	written sync.Map
}

// scope is what one reconcile learns, read by the phase functions after it.
type scope struct {
	hr     *selfhealv1alpha1.HealingRequest
	now    time.Time
	policy *selfhealv1alpha1.HealingPolicy
	// policies are the namespace's HealingPolicies; holder (holderName) is the one
	// whose status keeps the namespace's action ledger, as cached.
	policies   []selfhealv1alpha1.HealingPolicy
	holder     *selfhealv1alpha1.HealingPolicy
	holderName string
	// report is the full diagnosis; observed, in Verifying, the cheap observation
	// (diagnostics.Engine.Observe) verification judges instead.
	report   *diagnostics.Report
	observed *diagnostics.Snapshot
	// result is the smallest requeue asked for by a phase.
	result ctrl.Result
	// events wait for the status patch that records their transition.
	events []pendingEvent
	// duplicate is the duplicate check under way, joined before anything is written.
	duplicate *duplicateCheck
	// reserved: this pass added the attempt's reservation to the ledger, so no other
	// reconcile has reserved, or acted for, this request's attempt (see plan).
	reserved bool
	// adopted: this pass recorded, as an intent, a reservation an earlier reconcile
	// made and did not record; it is executed only once that intent is persisted.
	adopted bool
}

func (s *scope) requeueAfter(d time.Duration) {
	if d <= 0 {
		d = time.Millisecond
	}
	if s.result.RequeueAfter == 0 || d < s.result.RequeueAfter {
		s.result.RequeueAfter = d
	}
}

// verifyRecheck is how long Verifying waits for a watch event before looking again.
const verifyRecheck = 2 * time.Second

// errStop ends the phase list for this reconcile without an error.
var errStop = errors.New("stop")

// Reconcile gets the request, runs the phases in order and writes status once, as a
// patch. When that patch recorded an intent, the same reconcile goes on to execute it
// (see executeRecorded).
func (r *HealingRequestReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	hr := &selfhealv1alpha1.HealingRequest{}
	if err := r.Client.Get(ctx, req.NamespacedName, hr); err != nil {
		r.written.Delete(req.NamespacedName)
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.behindOwnWrite(req.NamespacedName, hr) {
		// The cache has not shown this process's last status write yet: a reconcile
		// woken by an older event would redo, from the copy before it, what that write
		// recorded (execute an intent again, only for its status patch to conflict).
		// The write's own event brings the request back.
		return ctrl.Result{}, nil
	}
	if !hr.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	s := &scope{hr: hr, now: r.Clock.Now()}
	if hr.Status.Phase.IsTerminal() {
		return r.retain(ctx, s)
	}
	phases := []func(context.Context, *scope) error{
		r.start,
		r.resolvePolicy,
		r.checkDuplicate,
		r.adopt,
		r.checkDeadline,
		r.diagnose,
		r.verify,
		r.execute,
		r.plan,
	}
	if err := r.pass(ctx, s, phases); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.executeRecorded(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	if !hr.Status.Phase.IsTerminal() && hr.Status.Deadline != nil {
		s.requeueAfter(hr.Status.Deadline.Sub(s.now))
	}
	return s.result, nil
}

// executeRecorded executes, in the reconcile that recorded them, the intents its
// status patch just persisted, one pass (and one status patch) per step. It is safe
// without a fresh read: the patch carried the resourceVersion this reconcile read, so
// the intent is the latest status and no other reconcile recorded anything in
// between; the workqueue runs one reconcile per request at a time, and a standby
// manager does not reconcile. A manager that dies before executing leaves the intent
// to the next reconcile, which executes it exactly as here (idempotently, from an
// uncached read of the workload). Acting now instead of waiting for the watch to bring
// the patched request back through the cache and the queue takes that round trip
// off the time from failure to action.
func (r *HealingRequestReconciler) executeRecorded(ctx context.Context, s *scope) error {
	for range len(s.hr.Status.Actions) {
		if s.hr.Status.Phase != selfhealv1alpha1.PhaseRemediating || intendedAction(s.hr) == nil || s.report == nil {
			return nil
		}
		s.now = r.Clock.Now()
		if err := r.pass(ctx, s, []func(context.Context, *scope) error{r.checkDeadline, r.execute}); err != nil {
			return err
		}
	}
	return nil
}

// pass runs phases in order until one stops, then writes the status they changed, as
// one patch, and emits the events that patch records.
func (r *HealingRequestReconciler) pass(ctx context.Context, s *scope, phases []func(context.Context, *scope) error) error {
	hr := s.hr
	before := hr.DeepCopy()
	s.events = nil
	var phaseErr error
	for _, phase := range phases {
		if err := phase(ctx, s); err != nil {
			if !errors.Is(err, errStop) {
				ctrl.LoggerFrom(ctx).Error(err, "Healing step failed; retrying with backoff", "phase", hr.Status.Phase)
				phaseErr = err
			}
			break
		}
	}
	switch err := r.joinDuplicate(s); {
	case errors.Is(err, errStop):
		phaseErr = nil // a duplicate: what failed meanwhile no longer matters
	case err != nil:
		phaseErr = errors.Join(phaseErr, err)
	}
	// What the phases before a failure changed is written too (the first sight, the
	// findings), as it was before a failed step.
	if err := r.patchStatus(ctx, before, hr); err != nil {
		return errors.Join(phaseErr, err)
	}
	r.emit(hr, s.events)
	if !before.Status.Phase.IsTerminal() && hr.Status.Phase.IsTerminal() {
		ctrl.LoggerFrom(ctx).Info("Healing finished", "phase", hr.Status.Phase, "issue", hr.Status.Issue,
			"reason", readyReason(hr), "attempts", hr.Status.Attempts)
	}
	return phaseErr
}

// patchStatus writes the status once, as a merge patch with optimistic locking: a
// reconcile that worked from a stale cache fails with a conflict and is retried, so it
// can never record (or act on) a second intent.
func (r *HealingRequestReconciler) patchStatus(ctx context.Context, before, hr *selfhealv1alpha1.HealingRequest) error {
	if equality.Semantic.DeepEqual(before.Status, hr.Status) {
		return nil
	}
	hr.Status.ObservedGeneration = hr.Generation
	patch := client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})
	if err := r.Client.Status().Patch(ctx, hr, patch); err != nil {
		if apierrors.IsConflict(err) {
			return fmt.Errorf("status changed since it was read; retrying: %w", err)
		}
		return fmt.Errorf("patching status: %w", err)
	}
	r.written.Store(client.ObjectKeyFromObject(hr), hr.ResourceVersion)
	observeTransition(before, hr)
	return nil
}

// behindOwnWrite reports whether the cached hr is older than this process's last
// status write of it. Resource versions of one resource compare as integers on the
// API server's etcd storage (resourceversion.CompareResourceVersion); one that does
// not parse is taken as current, as before this check existed.
func (r *HealingRequestReconciler) behindOwnWrite(key types.NamespacedName, hr *selfhealv1alpha1.HealingRequest) bool {
	v, ok := r.written.Load(key)
	if !ok {
		return false
	}
	if cmp, err := resourceversion.CompareResourceVersion(hr.ResourceVersion, v.(string)); err == nil && cmp < 0 {
		return true
	}
	r.written.CompareAndDelete(key, v)
	return false
}

// start records the first sight of the request.
func (r *HealingRequestReconciler) start(_ context.Context, s *scope) error {
	hr := s.hr
	if hr.Status.StartTime != nil {
		return nil
	}
	hr.Status.StartTime = ptr.To(metav1.NewMicroTime(s.now))
	hr.Status.Phase = selfhealv1alpha1.PhasePending
	msg := fmt.Sprintf("Received: %s calling service %s", hr.Spec.Trigger.FailureClass, hr.Spec.Target.Service)
	addProgress(hr, s.now, msg)
	setCondition(hr, selfhealv1alpha1.ConditionReady, metav1.ConditionUnknown, selfhealv1alpha1.ReasonProgressing, "Healing started")
	r.event(s, corev1.EventTypeNormal, "HealingStarted", "Start", msg)
	return nil
}

// resolvePolicy finds the governing policy and the ledger policy, and fixes the
// deadline.
func (r *HealingRequestReconciler) resolvePolicy(ctx context.Context, s *scope) error {
	hr := s.hr
	p, err := r.findPolicy(ctx, s)
	if err != nil {
		return err
	}
	s.policy = p
	if s.holder = remediation.LedgerHolder(s.policies); s.holder != nil {
		s.holderName = s.holder.Name
	}
	if hr.Status.Deadline == nil {
		deadline := selfhealv1alpha1.DefaultDeadline
		if p != nil {
			deadline = p.Spec.GetDeadline()
			hr.Status.Policy = p.Name
		}
		// Measured on the injected clock, with microseconds, from the controller's first
		// sight of the request (status.startTime): creationTimestamp has whole seconds.
		// It is the creation unless no controller was running; a new leader continues
		// the deadline its predecessor recorded.
		hr.Status.Deadline = ptr.To(metav1.NewMicroTime(hr.Status.StartTime.Add(deadline)))
	}
	return nil
}

// findPolicy lists the namespace's policies into s.policies and returns the one that
// governs the request: spec.policyName, else the one recorded in status, else the
// oldest whose selector matches the Service.
func (r *HealingRequestReconciler) findPolicy(ctx context.Context, s *scope) (*selfhealv1alpha1.HealingPolicy, error) {
	hr := s.hr
	var list selfhealv1alpha1.HealingPolicyList
	if err := r.Client.List(ctx, &list, client.InNamespace(hr.Namespace)); err != nil {
		return nil, err
	}
	s.policies = list.Items
	named := hr.Spec.PolicyName
	if named == "" {
		named = hr.Status.Policy
	}
	if named != "" {
		for i := range list.Items {
			if list.Items[i].Name == named {
				return list.Items[i].DeepCopy(), nil
			}
		}
		if hr.Spec.PolicyName != "" {
			return nil, nil
		}
	}
	svcLabels, err := serviceLabels(ctx, r.Client, hr)
	if err != nil {
		return nil, err
	}
	if p := matchPolicy(list.Items, svcLabels); p != nil {
		return p, nil
	}
	// "No policy" ends the healing; a policy, or the Service, created a moment ago may
	// not be in the cache yet, so ask the API server before concluding.
	if err := r.APIReader.List(ctx, &list, client.InNamespace(hr.Namespace)); err != nil {
		return nil, err
	}
	s.policies = list.Items
	if svcLabels, err = serviceLabels(ctx, r.APIReader, hr); err != nil {
		return nil, err
	}
	return matchPolicy(list.Items, svcLabels), nil
}

// serviceLabels are the labels of the request's Service as reader has it; none when it
// does not exist.
func serviceLabels(ctx context.Context, reader client.Reader, hr *selfhealv1alpha1.HealingRequest) (labels.Set, error) {
	svc := &corev1.Service{}
	if err := reader.Get(ctx, types.NamespacedName{Namespace: hr.Namespace, Name: hr.Spec.Target.Service}, svc); err != nil {
		if apierrors.IsNotFound(err) {
			return labels.Set{}, nil
		}
		return nil, err
	}
	return svc.Labels, nil
}

// matchPolicy returns the oldest policy whose service selector matches, so the choice
// is stable when several match.
func matchPolicy(policies []selfhealv1alpha1.HealingPolicy, svcLabels labels.Set) *selfhealv1alpha1.HealingPolicy {
	ordered := make([]*selfhealv1alpha1.HealingPolicy, len(policies))
	for i := range policies {
		ordered[i] = &policies[i]
	}
	sort.Slice(ordered, func(i, j int) bool { return selfhealv1alpha1.CreatedBefore(ordered[i], ordered[j]) })
	for _, p := range ordered {
		sel := labels.Everything()
		if p.Spec.ServiceSelector != nil {
			var err error
			if sel, err = metav1.LabelSelectorAsSelector(p.Spec.ServiceSelector); err != nil {
				continue // the CRD validates selectors; an invalid one governs nothing
			}
		}
		if sel.Matches(svcLabels) {
			return p.DeepCopy()
		}
	}
	return nil
}

// checkDuplicate makes a second request for a target that already has an active
// healing defer to it and act on nothing. It reads uncached: two requests created
// together must each see the other. The read runs while the pass goes on to diagnose
// and plan, which only read, and is joined (joinDuplicate) before the pass writes
// anything: before a reservation, after the access review, whose round trip it
// overlaps, and at the latest before the status patch.
func (r *HealingRequestReconciler) checkDuplicate(ctx context.Context, s *scope) error {
	hr := s.hr
	if hr.Status.Phase != selfhealv1alpha1.PhasePending {
		return nil
	}
	d := &duplicateCheck{done: make(chan struct{}), status: *hr.Status.DeepCopy(), events: len(s.events)}
	// The goroutine reads only these copies; the phases go on changing hr's status.
	self := hr.ObjectMeta.DeepCopy()
	ns, service := hr.Namespace, hr.Spec.Target.Service
	go func() {
		defer close(d.done)
		// spec.target.service is a selectable field of the CRD: the API server sends
		// only this target's requests, however many the namespace retains.
		var list selfhealv1alpha1.HealingRequestList
		if d.err = r.APIReader.List(ctx, &list, client.InNamespace(ns),
			client.MatchingFields{indexTargetService: service}); d.err != nil {
			return
		}
		for i := range list.Items {
			o := &list.Items[i]
			if o.UID != self.UID && o.Spec.Target.Service == service && !o.Status.Phase.IsTerminal() &&
				o.Status.DuplicateOf == "" && selfhealv1alpha1.CreatedBefore(o, self) {
				d.of = o.Name
				return
			}
		}
	}()
	s.duplicate = d
	return nil
}

// duplicateCheck is checkDuplicate's read under way. status and events are the
// request's as they were when it started: a duplicate, or a failed check, returns
// the request to them, so it stays Pending (and checked again) or ends a duplicate
// with nothing of the diagnosis it did meanwhile.
type duplicateCheck struct {
	done   chan struct{}
	of     string // the active request this one follows; empty when none
	err    error
	status selfhealv1alpha1.HealingRequestStatus
	events int
}

// joinDuplicate waits for the duplicate check under way, if any. It returns errStop
// when the request is a duplicate and has been ended as one.
func (r *HealingRequestReconciler) joinDuplicate(s *scope) error {
	d := s.duplicate
	if d == nil {
		return nil
	}
	<-d.done
	s.duplicate = nil
	if d.err == nil && d.of == "" {
		return nil
	}
	hr := s.hr
	hr.Status = d.status
	s.events = s.events[:d.events]
	if d.err != nil {
		return fmt.Errorf("checking for an active healing of service %s: %w", hr.Spec.Target.Service, d.err)
	}
	hr.Status.DuplicateOf = d.of
	r.finish(s, selfhealv1alpha1.PhaseSkipped, selfhealv1alpha1.ReasonDuplicate,
		fmt.Sprintf("Healing %s is already active for service %s; following it", d.of, hr.Spec.Target.Service))
	return errStop
}

// checkDeadline ends the healing at its deadline; no action is taken after it. An
// intent still recorded as Intended is settled from the live workload first: the
// manager may have acted and died before recording it.
func (r *HealingRequestReconciler) checkDeadline(ctx context.Context, s *scope) error {
	hr := s.hr
	if hr.Status.Deadline == nil || s.now.Before(hr.Status.Deadline.Time) {
		return nil
	}
	msg := fmt.Sprintf("Deadline of %s passed in phase %s", hr.Status.Deadline.Sub(hr.Status.StartTime.Time).Round(time.Second), hr.Status.Phase)
	for i := range hr.Status.Actions {
		a := &hr.Status.Actions[i]
		if a.Outcome != selfhealv1alpha1.OutcomeIntended {
			continue
		}
		applied, detail, err := r.Executor.Applied(ctx, hr.Namespace, stepOf(a))
		if err != nil {
			return fmt.Errorf("checking whether %s on %s was applied: %w", a.Type, a.Workload, err)
		}
		a.CompletedAt = &metav1.Time{Time: s.now}
		if applied {
			a.Outcome, a.Message = selfhealv1alpha1.OutcomeSucceeded, diagnostics.Truncate("applied before the deadline: "+detail, 1024)
		} else {
			a.Outcome, a.Message = selfhealv1alpha1.OutcomeFailed, diagnostics.Truncate("not executed before the deadline: "+detail, 1024)
		}
	}
	r.finish(s, selfhealv1alpha1.PhaseFailed, selfhealv1alpha1.ReasonDeadlineExceeded, msg)
	return errStop
}

// stepOf is the step an action records.
func stepOf(a *selfhealv1alpha1.HealingAction) remediation.Step {
	return remediation.Step{Type: a.Type, Workload: a.Workload, At: a.StartedAt.Time}
}

// diagnose gathers and classifies; every reconcile that may act or verify works from a
// fresh look at the target. Verifying only observes (workload, pods, EndpointSlices;
// no logs, events, policies or metrics): the findings stay those of the diagnosis.
func (r *HealingRequestReconciler) diagnose(ctx context.Context, s *scope) error {
	hr := s.hr
	target := diagnostics.Target{Namespace: hr.Namespace, Service: hr.Spec.Target.Service,
		Workload: hr.Spec.Target.Workload, FailureClass: hr.Spec.Trigger.FailureClass}
	if hr.Status.Phase == selfhealv1alpha1.PhaseVerifying && intendedAction(hr) == nil {
		snap, err := r.Diagnoser.Observe(ctx, target)
		if err != nil {
			return fmt.Errorf("observing: %w", err)
		}
		s.observed = snap
		return nil
	}
	report, err := r.Diagnoser.Diagnose(ctx, target, r.Caller)
	if err != nil {
		return fmt.Errorf("diagnosing: %w", err)
	}
	s.report = report
	hr.Status.Findings = boundFindings(report.Findings)
	if report.Snapshot != nil && report.Snapshot.Workload != nil {
		hr.Status.Workload = report.Snapshot.Workload.DeepCopy()
	}
	if hr.Status.Phase == selfhealv1alpha1.PhasePending || hr.Status.Phase == selfhealv1alpha1.PhaseDiagnosing || s.adopted {
		hr.Status.Issue = report.Issue
		if hr.Status.Phase == selfhealv1alpha1.PhasePending {
			hr.Status.Phase = selfhealv1alpha1.PhaseDiagnosing
		}
		if !conditionIs(hr, selfhealv1alpha1.ConditionDiagnosed, report.Issue) {
			addProgress(hr, s.now, fmt.Sprintf("Diagnosed %s: %s", report.Issue, report.Summary))
		}
		setCondition(hr, selfhealv1alpha1.ConditionDiagnosed, metav1.ConditionTrue, string(report.Issue), report.Summary)
	}
	return nil
}

// verify, in Verifying, acts on remediation.Verify's verdict over the observation:
// Healed ends the healing; a failed attempt goes back to diagnosis while attempts
// remain; otherwise it waits. Progress arrives by watches on the workload, pods and
// EndpointSlices.
func (r *HealingRequestReconciler) verify(ctx context.Context, s *scope) error {
	hr := s.hr
	if hr.Status.Phase != selfhealv1alpha1.PhaseVerifying || s.observed == nil {
		return nil
	}
	v := remediation.Verify(remediation.ActionsOfAttempt(hr.Status.Actions, hr.Status.Attempts), s.observed)
	if v.Outcome == remediation.VerdictHealed {
		setCondition(hr, selfhealv1alpha1.ConditionVerified, metav1.ConditionTrue, selfhealv1alpha1.ReasonServiceAvailable, v.Message)
		if hr.Status.Attempts == 0 {
			// Nothing was done: the audit log must not count this as a healing.
			r.finish(s, selfhealv1alpha1.PhaseSkipped, selfhealv1alpha1.ReasonAlreadyHealthy,
				fmt.Sprintf("Service %s was already serving; nothing done: %s", hr.Spec.Target.Service, v.Message))
			return errStop
		}
		r.finish(s, selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.ReasonHealed, fmt.Sprintf("Service %s is back: %s", hr.Spec.Target.Service, v.Message))
		return errStop
	}
	if v.Outcome == remediation.VerdictAttemptFailed || awaitedWorthWriting(s) {
		setCondition(hr, selfhealv1alpha1.ConditionVerified, metav1.ConditionFalse, selfhealv1alpha1.ReasonWaitingForRollout, v.Message)
	}
	if v.Outcome != remediation.VerdictAttemptFailed {
		// Unobserved or Waiting: the watches on the workload and its EndpointSlices
		// bring the next look. Informers are not ordered with one another, though: the
		// event that the last pod became ready can arrive before the pod cache shows
		// it, and then no later event comes. A look every verifyRecheck (cached
		// reads only) bounds that wait.
		s.requeueAfter(verifyRecheck)
		return errStop
	}
	hr.Status.Issue = v.Issue
	if hr.Status.Attempts >= maxAttempts(s.policy) {
		r.finish(s, selfhealv1alpha1.PhaseFailed, selfhealv1alpha1.ReasonAttemptsExhausted,
			fmt.Sprintf("Still %s after %d attempts: %s", v.Issue, hr.Status.Attempts, v.Summary))
		return errStop
	}
	hr.Status.Phase = selfhealv1alpha1.PhaseDiagnosing
	addProgress(hr, s.now, fmt.Sprintf("Attempt %d did not heal the service (%s); diagnosing again", hr.Status.Attempts, v.Issue))
	// The next attempt is planned from a full diagnosis, as the first was.
	return r.diagnose(ctx, s)
}

// verifyQuiet is how long an attempt's verification waits before it writes what it
// awaits.
const verifyQuiet = 10 * time.Second

// awaitedWorthWriting says whether a waiting verification should write what it awaits
// in the Verified condition: once per attempt (execute resets the condition to
// Unknown), and only once the wait has lasted verifyQuiet. The counts change with
// every pod, and most rollouts end sooner: a status write per change, or even one per
// attempt, on an API server busy with a burst of healings slows every other healing.
// A wait long enough to be looked into says what it waits for.
func awaitedWorthWriting(s *scope) bool {
	c := meta.FindStatusCondition(s.hr.Status.Conditions, selfhealv1alpha1.ConditionVerified)
	if c == nil || c.Reason != selfhealv1alpha1.ReasonWaitingForRollout {
		return true
	}
	if c.Status != metav1.ConditionUnknown {
		return false // written for this attempt already
	}
	var acted time.Time
	for _, a := range remediation.ActionsOfAttempt(s.hr.Status.Actions, s.hr.Status.Attempts) {
		if a.CompletedAt != nil && a.CompletedAt.After(acted) {
			acted = a.CompletedAt.Time
		}
	}
	if wait := verifyQuiet - s.now.Sub(acted); wait > 0 {
		s.requeueAfter(wait)
		return false
	}
	return true
}

// execute runs the action whose intent the previous reconcile recorded. Executing is
// idempotent for the same intent (the restart stamps the intent's time), so a manager
// that died after acting and before recording the outcome does not act twice.
func (r *HealingRequestReconciler) execute(ctx context.Context, s *scope) error {
	hr := s.hr
	a := intendedAction(hr)
	if a == nil || s.adopted {
		return nil
	}
	log := ctrl.LoggerFrom(ctx).WithValues("action", a.Type, "workload", a.Workload.String(), "attempt", a.Attempt)
	log.Info("Executing remediation")
	msg, err := r.Executor.Execute(ctx, hr.Namespace, stepOf(a), s.report.Snapshot)
	if err != nil && !remediation.IsPermanent(err) {
		return fmt.Errorf("executing %s on %s: %w", a.Type, a.Workload, err)
	}
	a.CompletedAt = &metav1.Time{Time: s.now}
	if err != nil {
		a.Outcome, a.Message = selfhealv1alpha1.OutcomeFailed, diagnostics.Truncate(err.Error(), 1024)
		setCondition(hr, selfhealv1alpha1.ConditionRemediated, metav1.ConditionFalse, selfhealv1alpha1.ReasonActionFailed, a.Message)
		what := fmt.Sprintf("%s on %s failed: %s", a.Type, a.Workload, a.Message)
		r.event(s, corev1.EventTypeWarning, "ActionFailed", string(a.Type), what)
		if errors.Is(err, remediation.ErrForbidden) {
			// The binding was removed, or the admission policy refused: a person decides.
			r.finish(s, selfhealv1alpha1.PhaseManualInterventionRequired, selfhealv1alpha1.ReasonNotPermitted, what)
			return errStop
		}
		r.finish(s, selfhealv1alpha1.PhaseFailed, selfhealv1alpha1.ReasonActionFailed, what)
		return errStop
	}
	a.Outcome, a.Message = selfhealv1alpha1.OutcomeSucceeded, diagnostics.Truncate(msg, 1024)
	addProgress(hr, s.now, fmt.Sprintf("%s on %s: %s", a.Type, a.Workload, msg))
	setCondition(hr, selfhealv1alpha1.ConditionRemediated, metav1.ConditionTrue, selfhealv1alpha1.ReasonActionSucceeded, a.Message)
	r.event(s, corev1.EventTypeNormal, "ActionSucceeded", string(a.Type), fmt.Sprintf("%s on %s: %s", a.Type, a.Workload, msg))

	// The attempt's further steps were recorded with the first; each runs in its own
	// pass, after the previous outcome is persisted.
	if intendedAction(hr) != nil {
		return errStop
	}
	// OOMKilled: the cleanup is done; a restart would be killed again.
	if hr.Status.Issue == selfhealv1alpha1.IssueOOMKilled {
		r.finish(s, selfhealv1alpha1.PhaseManualInterventionRequired, selfhealv1alpha1.ReasonManualIntervention,
			remediation.ManualReason(hr.Status.Issue, s.report.Snapshot))
		return errStop
	}
	hr.Status.Phase = selfhealv1alpha1.PhaseVerifying
	addProgress(hr, s.now, "Verifying: waiting for the rollout and ready endpoints")
	setCondition(hr, selfhealv1alpha1.ConditionVerified, metav1.ConditionUnknown, selfhealv1alpha1.ReasonWaitingForRollout,
		fmt.Sprintf("Attempt %d: waiting for the rollout and ready endpoints", hr.Status.Attempts))
	return errStop
}

// plan, in Diagnosing, decides the next attempt's actions and records the first intent.
// The action itself runs in the next reconcile, after the intent is persisted.
func (r *HealingRequestReconciler) plan(ctx context.Context, s *scope) error {
	hr := s.hr
	if hr.Status.Phase != selfhealv1alpha1.PhaseDiagnosing {
		return nil
	}
	lastEnded, err := r.lastHealingEnded(ctx, hr)
	if err != nil {
		return err
	}
	decide := func() remediation.Decision {
		// The ledger without this request's own reservation for the attempt being
		// planned: a reconcile that reserved and then failed to record the intent must
		// not be refused by its own entry. reserve grants that entry again.
		var ledger []selfhealv1alpha1.LedgerEntry
		var history []selfhealv1alpha1.TargetHistory
		if s.holder != nil {
			ledger, _ = remediation.Release(s.holder.Status.Ledger, hr.Name, string(hr.UID),
				func(e selfhealv1alpha1.LedgerEntry) bool { return e.Attempt != hr.Status.Attempts+1 })
			if o := s.holder.Status.Outcomes; o != nil {
				history = o.History
			}
		}
		return remediation.Plan(remediation.Input{
			Issue: s.report.Issue, Snapshot: s.report.Snapshot, Policy: s.policy,
			DryRun: hr.Spec.DryRun, Now: s.now, Ledger: ledger, LastHealingEnded: lastEnded,
			History: history,
		})
	}
	d := decide()
	if d.Refused() && d.Refusal.CountsLedger() && s.holder != nil {
		// Refused by the cached ledger: a refusal writes nothing, so no resourceVersion
		// check would correct a stale copy (one still showing entries released since).
		// It is decided again on the API server's ledger.
		if s.holder, err = r.freshHolder(ctx, s); err != nil {
			return fmt.Errorf("reading the ledger of policy %s: %w", s.holderName, err)
		}
		d = decide()
	}
	if !d.Refused() && !d.DryRun && len(d.Steps) > 0 {
		if d, err = r.admit(ctx, s, d); err != nil {
			return err
		}
	}
	allowed := metav1.ConditionTrue
	if d.Refused() {
		allowed = metav1.ConditionFalse
	}
	setCondition(hr, selfhealv1alpha1.ConditionRemediationAllowed, allowed, d.Reason, d.Message)

	switch {
	case d.Refused():
		r.finish(s, d.Refusal.Phase, d.Refusal.Reason, d.Refusal.Message)
		return errStop
	case d.DryRun:
		for _, st := range d.Steps {
			hr.Status.Actions = append(hr.Status.Actions, selfhealv1alpha1.HealingAction{
				Type: st.Type, Attempt: hr.Status.Attempts + 1, Workload: st.Workload, Outcome: selfhealv1alpha1.OutcomeDryRun,
				Message: diagnostics.Truncate(st.Reason, 1024), StartedAt: metav1.NewMicroTime(s.now), CompletedAt: &metav1.Time{Time: s.now},
			})
			hr.Status.LastAction = st.Type
		}
		trimActions(hr)
		r.event(s, corev1.EventTypeNormal, "DryRun", "Plan", d.Message)
		r.finish(s, selfhealv1alpha1.PhaseSkipped, selfhealv1alpha1.ReasonDryRun, "Dry run: "+d.Message)
		return errStop
	case len(d.Steps) == 0:
		// Nothing to remediate: verify what is there.
		hr.Status.Phase = selfhealv1alpha1.PhaseVerifying
		addProgress(hr, s.now, d.Message)
		s.requeueAfter(time.Millisecond)
		return errStop
	}

	hr.Status.Attempts++
	hr.Status.Phase = selfhealv1alpha1.PhaseRemediating
	actNow := s.reserved && s.now.Sub(hr.CreationTimestamp.Time) < actNowHorizon
	for _, st := range d.Steps {
		r.recordIntent(s, st, !actNow)
	}
	if !actNow {
		return errStop // executed once the intent is persisted (executeRecorded)
	}
	// The reservation is the intent: this pass added the request's attempt to the
	// ledger, with an update the API server applied only over the ledger it was
	// counted on, so no other reconcile, here or on another replica, has reserved
	// this attempt or will: a reservation is never removed while its request may act
	// (a released one is only marked, and every entry outlives the request's
	// deadline, see remediation.MinLedgerRetention and actNowHorizon). The attempt's
	// steps therefore run now, and the intent and the outcomes are recorded in one
	// status write, which takes that write off the time from failure to action. A
	// manager that dies before the write leaves the reservation, which the next
	// reconcile adopts (see adopt) and executes idempotently: the restart stamp is
	// the reservation's time.
	for intendedAction(hr) != nil && hr.Status.Phase == selfhealv1alpha1.PhaseRemediating {
		s.now = r.Clock.Now()
		if err := r.execute(ctx, s); err != nil && !errors.Is(err, errStop) {
			return err // the intents stay recorded and are executed again
		}
	}
	return errStop
}

// actNowHorizon bounds, from a request's creation, when a reservation may be acted on
// in the pass that made it: every reservation of the request is then younger than
// remediation.MinLedgerRetention (a minute left for clock skew between the API
// server and the managers), so still in the ledger.
const actNowHorizon = remediation.MinLedgerRetention - time.Minute

// recordIntent appends the action as Intended, started at the step's reservation
// (or now, for a step that reserves nothing). announce emits ActionIntended: an intent
// executed in the same pass is announced by its outcome's event alone.
func (r *HealingRequestReconciler) recordIntent(s *scope, st remediation.Step, announce bool) {
	hr := s.hr
	at := s.now
	if !st.At.IsZero() {
		at = st.At
	}
	hr.Status.Actions = append(hr.Status.Actions, selfhealv1alpha1.HealingAction{
		Type: st.Type, Attempt: hr.Status.Attempts, Workload: st.Workload, Outcome: selfhealv1alpha1.OutcomeIntended,
		Message: diagnostics.Truncate(st.Reason, 1024), StartedAt: metav1.NewMicroTime(at),
	})
	hr.Status.LastAction = st.Type
	trimActions(hr)
	addProgress(hr, s.now, fmt.Sprintf("Remediating (attempt %d): %s on %s", hr.Status.Attempts, st.Type, st.Workload))
	if announce {
		r.event(s, corev1.EventTypeNormal, "ActionIntended", string(st.Type), fmt.Sprintf("%s on %s: %s", st.Type, st.Workload, st.Reason))
	}
}

// admit passes a plan that would act through the gates only the API server can
// answer: the namespace's opt-in (may selfheal's identity make these writes there?),
// then, for a disruptive step, the reservation in the namespace ledger, which is what
// makes the circuit breaker and the storm limit exact. It returns the decision to
// record: the plan, or a refusal.
func (r *HealingRequestReconciler) admit(ctx context.Context, s *scope, d remediation.Decision) (remediation.Decision, error) {
	missing, err := r.Executor.Missing(ctx, s.hr.Namespace, d.Steps)
	if err != nil {
		return d, err
	}
	// The first write (the reservation) waits for the duplicate check.
	if err := r.joinDuplicate(s); err != nil {
		return d, err
	}
	if len(missing) > 0 {
		return refusalDecision(&remediation.Refusal{Phase: selfhealv1alpha1.PhaseManualInterventionRequired,
			Reason: selfhealv1alpha1.ReasonNotPermitted, Message: remediation.NotOptedIn(s.hr.Namespace, missing)}), nil
	}
	for i, st := range d.Steps {
		if !st.Type.Disruptive() {
			continue
		}
		granted, refusal, err := r.reserve(ctx, s, st)
		if err != nil {
			return d, err
		}
		if refusal != nil {
			return refusalDecision(refusal), nil
		}
		// An earlier reconcile's reservation of this attempt is the attempt's action,
		// whatever is planned now: it may have run.
		d.Steps[i] = remediation.Step{Type: granted.Action, Workload: granted.Workload, At: granted.ReservedAt.Time, Reason: st.Reason}
		if granted.Action != st.Type || granted.Workload != st.Workload {
			d.Steps[i].Reason = adoptedReason(granted)
		}
	}
	return d, nil
}

func adoptedReason(e selfhealv1alpha1.LedgerEntry) string {
	return fmt.Sprintf("reserved by an earlier reconcile at %s and not recorded; it may have run", e.ReservedAt.UTC().Format(time.RFC3339Nano))
}

// adopt records, as this attempt's intent, a reservation of it that the cached ledger
// shows and the status does not: a reconcile reserved it and died, or had its status
// write refused, possibly after acting. The intent is executed (idempotently, with the
// reservation's restart stamp) once it is persisted, or judged from the workload at
// the deadline; the healing thus never ends without the action that may have run.
// A reservation the cache does not show yet is found by reserve, which reads the
// API server; one never found (the healing ends without planning an action) still
// counts in the ledger: settle releases no reservation the status does not record.
func (r *HealingRequestReconciler) adopt(_ context.Context, s *scope) error {
	hr := s.hr
	if s.holder == nil || intendedAction(hr) != nil {
		return nil
	}
	switch hr.Status.Phase {
	case selfhealv1alpha1.PhasePending, selfhealv1alpha1.PhaseDiagnosing, selfhealv1alpha1.PhaseVerifying:
	default:
		return nil
	}
	e, ok := remediation.Reserved(s.holder.Status.Ledger, hr.Name, string(hr.UID), hr.Status.Attempts+1)
	if !ok || e.Released {
		return nil
	}
	if hr.Status.StartTime.After(e.ReservedAt.Time) {
		// Its first sight was lost with the status write: it was no later than the
		// reservation, and the deadline counts from it.
		deadline := hr.Status.Deadline.Sub(hr.Status.StartTime.Time)
		hr.Status.StartTime = e.ReservedAt.DeepCopy()
		hr.Status.Deadline = ptr.To(metav1.NewMicroTime(e.ReservedAt.Add(deadline)))
	}
	hr.Status.Attempts++
	hr.Status.Phase = selfhealv1alpha1.PhaseRemediating
	r.recordIntent(s, remediation.Step{Type: e.Action, Workload: e.Workload, At: e.ReservedAt.Time, Reason: adoptedReason(e)}, true)
	s.adopted = true
	return nil
}

func refusalDecision(r *remediation.Refusal) remediation.Decision {
	return remediation.Decision{Refusal: r, Reason: r.Reason, Message: r.Message}
}

// lastHealingEnded is when this target's last healing that acted ended, for the
// cooldown. The cooldown is a courtesy between healings; the hard limits (breaker and
// storm) count the ledger, which retention does not delete.
func (r *HealingRequestReconciler) lastHealingEnded(ctx context.Context, hr *selfhealv1alpha1.HealingRequest) (time.Time, error) {
	var list selfhealv1alpha1.HealingRequestList
	if err := r.Client.List(ctx, &list, client.InNamespace(hr.Namespace),
		client.MatchingFields{indexTargetService: hr.Spec.Target.Service}); err != nil {
		return time.Time{}, err
	}
	var records []remediation.ActionRecord
	for _, o := range list.Items {
		var finished time.Time
		if o.Status.CompletionTime != nil {
			finished = o.Status.CompletionTime.Time
		}
		for _, a := range o.Status.Actions {
			records = append(records, remediation.ActionRecord{Service: o.Spec.Target.Service, Outcome: a.Outcome, FinishedAt: finished})
		}
	}
	return remediation.LastHealingEnded(records, hr.Spec.Target.Service), nil
}

// finish moves the request to a terminal phase and derives Ready from it: True when
// the service serves (Healed, or found already serving).
func (r *HealingRequestReconciler) finish(s *scope, phase selfhealv1alpha1.HealingPhase, reason, message string) {
	hr := s.hr
	hr.Status.Phase = phase
	hr.Status.CompletionTime = &metav1.Time{Time: s.now}
	status := metav1.ConditionFalse
	if phase == selfhealv1alpha1.PhaseHealed || reason == selfhealv1alpha1.ReasonAlreadyHealthy {
		status = metav1.ConditionTrue
	}
	setCondition(hr, selfhealv1alpha1.ConditionReady, status, reason, message)
	addProgress(hr, s.now, fmt.Sprintf("%s: %s", phase, message))
	eventType := corev1.EventTypeNormal
	if phase == selfhealv1alpha1.PhaseFailed || phase == selfhealv1alpha1.PhaseManualInterventionRequired {
		eventType = corev1.EventTypeWarning
	}
	r.event(s, eventType, string(phase), "Finish", message)
}

// event queues an event; it is emitted only once the status that records the same
// transition is persisted, so a reconcile retried after a conflict never repeats it.
func (r *HealingRequestReconciler) event(s *scope, eventType, reason, action, note string) {
	s.events = append(s.events, pendingEvent{eventType, reason, action, diagnostics.Truncate(note, 1024)})
}

type pendingEvent struct{ eventType, reason, action, note string }

func (r *HealingRequestReconciler) emit(hr *selfhealv1alpha1.HealingRequest, events []pendingEvent) {
	if r.Recorder == nil {
		return
	}
	for _, e := range events {
		r.Recorder.Eventf(hr, nil, e.eventType, e.reason, e.action, "%s", e.note)
	}
}

func maxAttempts(p *selfhealv1alpha1.HealingPolicy) int32 {
	if p == nil {
		return selfhealv1alpha1.DefaultMaxAttempts
	}
	return p.Spec.GetMaxAttempts()
}

// SetupWithManager watches HealingRequests and what verification waits on: the
// workloads, pods and EndpointSlices of the targets.
func (r *HealingRequestReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("healingrequest").
		For(&selfhealv1alpha1.HealingRequest{}).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(r.requestsForService(func(o client.Object) string {
			return o.GetLabels()[discoveryv1.LabelServiceName]
		})), builder.WithPredicates(predicate.ResourceVersionChangedPredicate{})).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(r.requestsForWorkload(selfhealv1alpha1.WorkloadDeployment))).
		Watches(&appsv1.StatefulSet{}, handler.EnqueueRequestsFromMapFunc(r.requestsForWorkload(selfhealv1alpha1.WorkloadStatefulSet))).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// requestsForService maps an object to the active HealingRequests of its Service.
func (r *HealingRequestReconciler) requestsForService(service func(client.Object) string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		name := service(o)
		if name == "" {
			return nil
		}
		return r.activeRequests(ctx, o.GetNamespace(), client.MatchingFields{indexTargetService: name}, nil)
	}
}

// requestsForWorkload maps a workload to the active HealingRequests that resolved it.
func (r *HealingRequestReconciler) requestsForWorkload(kind selfhealv1alpha1.WorkloadKind) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		return r.activeRequests(ctx, o.GetNamespace(), nil, func(hr *selfhealv1alpha1.HealingRequest) bool {
			w := hr.Status.Workload
			return w != nil && w.Kind == kind && w.Name == o.GetName()
		})
	}
}

func (r *HealingRequestReconciler) activeRequests(ctx context.Context, ns string, fields client.MatchingFields, keep func(*selfhealv1alpha1.HealingRequest) bool) []reconcile.Request {
	var list selfhealv1alpha1.HealingRequestList
	opts := []client.ListOption{client.InNamespace(ns)}
	if fields != nil {
		opts = append(opts, fields)
	}
	if err := r.Client.List(ctx, &list, opts...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing HealingRequests for a watch event")
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		hr := &list.Items[i]
		if hr.Status.Phase.IsTerminal() || (keep != nil && !keep(hr)) {
			continue
		}
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(hr)})
	}
	return out
}
