package diagnostics

import (
	"context"
	"fmt"
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// What the gatherer reads; controller-gen turns these markers into the manager's role and
// hack/rbaccomments copies each "rbac:" line above the rule it produced.
// rbac: Diagnosis reads a Service, its pods and their events.
// +kubebuilder:rbac:groups="",resources=services;pods;events,verbs=get;list;watch
// rbac: Diagnosis reads the recent logs of a Service's pods.
// +kubebuilder:rbac:groups="",resources=pods/log,verbs=get
// rbac: Diagnosis reads the workload that owns the pods (ReplicaSet to Deployment, or StatefulSet).
// +kubebuilder:rbac:groups=apps,resources=deployments;replicasets;statefulsets,verbs=get;list;watch
// rbac: Diagnosis reads a Service's EndpointSlices to see which pods it routes to.
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// rbac: Diagnosis reads the NetworkPolicies that may block traffic to a Service.
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch
// rbac: Diagnosis reads the caller's namespace labels, which network policies may admit it by.
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// rbac: Diagnosis compares pod usage from metrics.k8s.io with the limits, when that API is served.
// +kubebuilder:rbac:groups=metrics.k8s.io,resources=pods,verbs=get;list

// EventInvolvedObjectNameField is the field of core/v1 Events the gatherer queries
// when Options.UseEventIndex is set. The API server supports it as a field selector;
// a cache needs an index of this name (see IndexEvents).
const EventInvolvedObjectNameField = "involvedObject.name"

// Options bound what one gather reads. Zero values take the defaults below.
type Options struct {
	// TailLines is how many lines of each container log are read (default 200).
	TailLines int64
	// LimitBytes caps the bytes read from each container log (default 64 KiB).
	LimitBytes int64
	// MaxLogPods is how many unhealthy pods have their logs read (default 3).
	MaxLogPods int
	// MaxEvents is how many of the newest relevant events are kept (default 50).
	MaxEvents int
	// LogTimeout bounds each log read (default 5s).
	LogTimeout time.Duration
	// MetricsCacheTTL is how long the answer "is metrics.k8s.io served?" is reused
	// (default 5m).
	MetricsCacheTTL time.Duration
	// UseEventIndex queries events by involvedObject.name per pod (the reader must
	// have that index) instead of listing the namespace's events and filtering.
	UseEventIndex bool
}

// Option defaults.
const (
	DefaultTailLines       = int64(200)
	DefaultLimitBytes      = int64(64 << 10)
	DefaultMaxLogPods      = 3
	DefaultMaxEvents       = 50
	DefaultLogTimeout      = 5 * time.Second
	DefaultMetricsCacheTTL = 5 * time.Minute
	// maxLineLength bounds one stored log line, after redaction.
	maxLineLength = 2048
)

func (o Options) withDefaults() Options {
	if o.TailLines <= 0 {
		o.TailLines = DefaultTailLines
	}
	if o.LimitBytes <= 0 {
		o.LimitBytes = DefaultLimitBytes
	}
	if o.MaxLogPods <= 0 {
		o.MaxLogPods = DefaultMaxLogPods
	}
	if o.MaxEvents <= 0 {
		o.MaxEvents = DefaultMaxEvents
	}
	if o.LogTimeout <= 0 {
		o.LogTimeout = DefaultLogTimeout
	}
	if o.MetricsCacheTTL <= 0 {
		o.MetricsCacheTTL = DefaultMetricsCacheTTL
	}
	return o
}

// Gatherer reads, never writes, everything the checks need into a Snapshot.
type Gatherer struct {
	reader  client.Reader
	kube    kubernetes.Interface
	clock   clock.PassiveClock
	opts    Options
	metrics *metricsProbe
}

// NewGatherer reads objects through reader (the manager's cache), and logs and
// metrics through kube. kube may be nil: logs are then recorded as unreadable and
// usage as unavailable.
func NewGatherer(reader client.Reader, kube kubernetes.Interface, clk clock.PassiveClock, opts Options) *Gatherer {
	if clk == nil {
		clk = clock.RealClock{}
	}
	opts = opts.withDefaults()
	return &Gatherer{reader: reader, kube: kube, clock: clk, opts: opts, metrics: &metricsProbe{ttl: opts.MetricsCacheTTL}}
}

// Gather reads the target's state for a diagnosis. A missing Service is not an error
// (Service is nil); unreadable logs and metrics are recorded in the Snapshot; other API
// errors are returned so the caller retries.
func (g *Gatherer) Gather(ctx context.Context, t Target, c Caller) (*Snapshot, error) {
	s, err := g.observe(ctx, t)
	if err != nil {
		return nil, err
	}
	if s.Caller, err = g.callerWithNamespaceLabels(ctx, c); err != nil {
		return nil, err
	}
	if s.Service == nil {
		return s, nil
	}
	ns := t.Namespace
	if s.Events, err = g.events(ctx, s); err != nil {
		return nil, err
	}
	policies := &networkingv1.NetworkPolicyList{}
	if err := g.reader.List(ctx, policies, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("listing network policies in %s: %w", ns, err)
	}
	s.NetworkPolicies = policies.Items
	s.Logs = g.logs(ctx, ns, s.Pods)
	s.Usage = g.usage(ctx, s)
	return s, nil
}

// Observe reads only what verification judges: the Service, the workload, its pods
// and the Service's EndpointSlices, all from the reader (the cache). No events, no
// network policies, no pod logs, no metrics: the Snapshot is marked Observation.
func (g *Gatherer) Observe(ctx context.Context, t Target) (*Snapshot, error) {
	s, err := g.observe(ctx, t)
	if err != nil {
		return nil, err
	}
	s.Observation = true
	return s, nil
}

// observe reads the Service, resolves the workload, and reads the pods and the
// EndpointSlices: what every gather needs.
func (g *Gatherer) observe(ctx context.Context, t Target) (*Snapshot, error) {
	s := &Snapshot{Target: t, GatheredAt: g.clock.Now()}
	ns := t.Namespace

	svc := &corev1.Service{}
	if err := g.reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: t.Service}, svc); err != nil {
		if apierrors.IsNotFound(err) {
			return s, nil
		}
		return nil, fmt.Errorf("getting service %s/%s: %w", ns, t.Service, err)
	}
	s.Service = svc

	pods, err := g.selectedPods(ctx, svc)
	if err != nil {
		return nil, err
	}
	if err := g.resolveWorkload(ctx, s, pods); err != nil {
		return nil, err
	}
	if s.Pods, err = g.ownedPods(ctx, s, pods); err != nil {
		return nil, err
	}

	slices := &discoveryv1.EndpointSliceList{}
	if err := g.reader.List(ctx, slices, client.InNamespace(ns),
		client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
		return nil, fmt.Errorf("listing endpoint slices of service %s/%s: %w", ns, svc.Name, err)
	}
	s.EndpointSlices = slices.Items
	return s, nil
}

// selectedPods lists the pods the Service's selector matches, in every phase. A
// Service without a selector selects no pods.
func (g *Gatherer) selectedPods(ctx context.Context, svc *corev1.Service) ([]corev1.Pod, error) {
	if len(svc.Spec.Selector) == 0 {
		return nil, nil
	}
	list := &corev1.PodList{}
	if err := g.reader.List(ctx, list, client.InNamespace(svc.Namespace),
		client.MatchingLabelsSelector{Selector: labels.SelectorFromSet(svc.Spec.Selector)}); err != nil {
		return nil, fmt.Errorf("listing pods of service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	return list.Items, nil
}

// resolveWorkload finds the workload behind the Service: the one the request names;
// else the controller owner of most selected pods (ReplicaSet -> Deployment, or
// StatefulSet); else the only Deployment or StatefulSet whose pod template the
// selector matches (a workload scaled to zero has no pods to ask); else a Deployment
// named like the Service (so a selector that matches nothing can still be reported).
func (g *Gatherer) resolveWorkload(ctx context.Context, s *Snapshot, pods []corev1.Pod) error {
	if ref := s.Target.Workload; ref != nil {
		_, err := g.loadWorkload(ctx, s, *ref)
		return err
	}
	if ref, err := g.workloadFromPods(ctx, s.Target.Namespace, pods); err != nil {
		return err
	} else if ref != nil {
		if found, err := g.loadWorkload(ctx, s, *ref); err != nil || found {
			return err
		}
	}
	if len(s.Service.Spec.Selector) > 0 {
		ref, err := g.workloadFromTemplates(ctx, s.Service)
		if err != nil {
			return err
		}
		if ref != nil {
			_, err := g.loadWorkload(ctx, s, *ref)
			return err
		}
	}
	_, err := g.loadWorkload(ctx, s, selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: s.Service.Name})
	return err
}

// loadWorkload reads the workload into the Snapshot; it reports whether it exists.
func (g *Gatherer) loadWorkload(ctx context.Context, s *Snapshot, ref selfhealv1alpha1.WorkloadReference) (bool, error) {
	key := types.NamespacedName{Namespace: s.Target.Namespace, Name: ref.Name}
	var obj client.Object
	switch ref.Kind {
	case selfhealv1alpha1.WorkloadDeployment:
		obj = &appsv1.Deployment{}
	case selfhealv1alpha1.WorkloadStatefulSet:
		obj = &appsv1.StatefulSet{}
	default:
		return false, nil
	}
	if err := g.reader.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("getting %s %s: %w", ref.Kind, key, err)
	}
	r := ref
	s.Workload = &r
	switch o := obj.(type) {
	case *appsv1.Deployment:
		s.Deployment = o
	case *appsv1.StatefulSet:
		s.StatefulSet = o
	}
	return true, nil
}

func (g *Gatherer) workloadFromPods(ctx context.Context, ns string, pods []corev1.Pod) (*selfhealv1alpha1.WorkloadReference, error) {
	type owner struct{ kind, name string }
	votes := map[owner]int{}
	for i := range pods {
		ref := metav1.GetControllerOf(&pods[i])
		if ref == nil {
			continue
		}
		switch ref.Kind {
		case "ReplicaSet", "StatefulSet":
			votes[owner{ref.Kind, ref.Name}]++
		}
	}
	var best owner
	for o, n := range votes {
		if n > votes[best] || (n == votes[best] && o.name < best.name) {
			best = o
		}
	}
	switch best.kind {
	case "StatefulSet":
		return &selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadStatefulSet, Name: best.name}, nil
	case "ReplicaSet":
		rs := &appsv1.ReplicaSet{}
		if err := g.reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: best.name}, rs); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, nil
			}
			return nil, fmt.Errorf("getting replicaset %s/%s: %w", ns, best.name, err)
		}
		if ref := metav1.GetControllerOf(rs); ref != nil && ref.Kind == "Deployment" {
			return &selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: ref.Name}, nil
		}
	}
	return nil, nil
}

func (g *Gatherer) workloadFromTemplates(ctx context.Context, svc *corev1.Service) (*selfhealv1alpha1.WorkloadReference, error) {
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var found []selfhealv1alpha1.WorkloadReference
	deps := &appsv1.DeploymentList{}
	if err := g.reader.List(ctx, deps, client.InNamespace(svc.Namespace)); err != nil {
		return nil, fmt.Errorf("listing deployments in %s: %w", svc.Namespace, err)
	}
	for _, d := range deps.Items {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			found = append(found, selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: d.Name})
		}
	}
	sets := &appsv1.StatefulSetList{}
	if err := g.reader.List(ctx, sets, client.InNamespace(svc.Namespace)); err != nil {
		return nil, fmt.Errorf("listing statefulsets in %s: %w", svc.Namespace, err)
	}
	for _, st := range sets.Items {
		if sel.Matches(labels.Set(st.Spec.Template.Labels)) {
			found = append(found, selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadStatefulSet, Name: st.Name})
		}
	}
	if len(found) != 1 {
		// None, or ambiguous: guessing would point a restart at the wrong workload.
		return nil, nil
	}
	return &found[0], nil
}

// ownedPods keeps the selected pods the resolved workload owns, so a stray pod that
// happens to match the selector does not steer the diagnosis. Without a workload all
// selected pods are kept.
func (g *Gatherer) ownedPods(ctx context.Context, s *Snapshot, pods []corev1.Pod) ([]corev1.Pod, error) {
	var owners map[types.UID]bool
	switch {
	case s.Deployment != nil:
		rsList := &appsv1.ReplicaSetList{}
		if err := g.reader.List(ctx, rsList, client.InNamespace(s.Target.Namespace)); err != nil {
			return nil, fmt.Errorf("listing replicasets in %s: %w", s.Target.Namespace, err)
		}
		owners = map[types.UID]bool{}
		for i := range rsList.Items {
			if ref := metav1.GetControllerOf(&rsList.Items[i]); ref != nil && ref.UID == s.Deployment.UID {
				owners[rsList.Items[i].UID] = true
			}
		}
	case s.StatefulSet != nil:
		owners = map[types.UID]bool{s.StatefulSet.UID: true}
	default:
		return pods, nil
	}
	out := pods[:0:0]
	for i := range pods {
		if ref := metav1.GetControllerOf(&pods[i]); ref != nil && owners[ref.UID] {
			out = append(out, pods[i])
		}
	}
	return out, nil
}

// events returns the newest events about the pods and the workload.
func (g *Gatherer) events(ctx context.Context, s *Snapshot) ([]corev1.Event, error) {
	ns := s.Target.Namespace
	type object struct{ kind, name string }
	wanted := map[object]bool{}
	for _, p := range s.Pods {
		wanted[object{"Pod", p.Name}] = true
	}
	if s.Workload != nil {
		wanted[object{string(s.Workload.Kind), s.Workload.Name}] = true
	}
	var all []corev1.Event
	if g.opts.UseEventIndex {
		names := map[string]bool{}
		for o := range wanted {
			names[o.name] = true
		}
		for name := range names {
			list := &corev1.EventList{}
			if err := g.reader.List(ctx, list, client.InNamespace(ns),
				client.MatchingFields{EventInvolvedObjectNameField: name}); err != nil {
				return nil, fmt.Errorf("listing events of %s in %s: %w", name, ns, err)
			}
			all = append(all, list.Items...)
		}
	} else {
		list := &corev1.EventList{}
		if err := g.reader.List(ctx, list, client.InNamespace(ns)); err != nil {
			return nil, fmt.Errorf("listing events in %s: %w", ns, err)
		}
		all = list.Items
	}
	var out []corev1.Event
	for _, e := range all {
		if wanted[object{e.InvolvedObject.Kind, e.InvolvedObject.Name}] {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return eventTime(&out[i]).After(eventTime(&out[j])) })
	if len(out) > g.opts.MaxEvents {
		out = out[:g.opts.MaxEvents]
	}
	return out, nil
}

// eventTime is when an event last happened, whichever API wrote it.
func eventTime(e *corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// IndexEvents registers the involvedObject.name index that Options.UseEventIndex
// needs on a cache (mgr.GetFieldIndexer()).
func IndexEvents(ctx context.Context, indexer client.FieldIndexer) error {
	return indexer.IndexField(ctx, &corev1.Event{}, EventInvolvedObjectNameField, func(o client.Object) []string {
		e, ok := o.(*corev1.Event)
		if !ok {
			return nil
		}
		return []string{e.InvolvedObject.Name}
	})
}

// callerWithNamespaceLabels fills in the labels of the caller's namespace, unless
// they were given: a network policy may admit the gateway by a namespaceSelector on
// them, and judging it without them would call an admitting policy blocking. A
// namespace that does not exist has no labels but its name.
func (g *Gatherer) callerWithNamespaceLabels(ctx context.Context, c Caller) (Caller, error) {
	if c.Namespace == "" || c.NamespaceLabels != nil {
		return c, nil
	}
	ns := &corev1.Namespace{}
	if err := g.reader.Get(ctx, client.ObjectKey{Name: c.Namespace}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return c, nil
		}
		return c, fmt.Errorf("reading the caller's namespace %s: %w", c.Namespace, err)
	}
	c.NamespaceLabels = ns.Labels
	return c, nil
}
