package remediation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
)

// RestartStamp formats a restart's time for RestartedAtAnnotation. kubectl uses
// seconds; selfheal keeps the microseconds its status records, so two restarts within
// one second are two restarts.
func RestartStamp(t time.Time) string {
	return t.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano)
}

// restartedSince returns obj's restart stamp and whether it is at or after at: the
// restart of an intent made at at has run, or a later one has. A stamp that does not
// parse (not written by selfheal or kubectl) says nothing.
func restartedSince(obj client.Object, at time.Time) (string, bool) {
	current := podTemplateAnnotations(obj)[RestartedAtAnnotation]
	if current == "" {
		return "", false
	}
	if current == RestartStamp(at) {
		return current, true
	}
	t, err := time.Parse(time.RFC3339Nano, current)
	return current, err == nil && !at.IsZero() && !t.Before(at.UTC().Truncate(time.Microsecond))
}

// RestartedAtAnnotation is the pod-template annotation kubectl rollout restart sets;
// diagnosis reads it back (diagnostics.WorkloadFacts.RestartedAt).
const RestartedAtAnnotation = diagnostics.RestartedAtAnnotation

// The writes of remediation, granted per namespace: config/rbac binds the ClusterRole
// generated from these markers (RemediationRole) with a RoleBinding in each namespace
// that opts in to healing, and config/admission's ValidatingAdmissionPolicy admits, of
// these, only the three remediations.
//
// rbac: Remediation restarts a workload by patching its pod-template annotation (the only spec write).
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets,verbs=patch
// rbac: Remediation scales a workload from zero through the scale subresource only.
// +kubebuilder:rbac:groups=apps,resources=deployments/scale;statefulsets/scale,verbs=update
// rbac: Remediation deletes only failed pods (the only pod write).
// +kubebuilder:rbac:groups="",resources=pods,verbs=delete

// RemediationRole is the ClusterRole a namespace binds to opt in to remediation.
const RemediationRole = "selfheal-remediation"

// Permanent errors: retrying the same step cannot succeed. Any other error from
// Execute is transient (API unavailable, conflict) and the step may be retried.
var (
	// ErrWorkloadGone: the workload does not exist (or was replaced by another object
	// of the same name since the diagnosis).
	ErrWorkloadGone = errors.New("workload not found")
	// ErrDeploymentPaused: the live Deployment is paused; selfheal never touches it.
	ErrDeploymentPaused = errors.New("deployment is paused")
	// ErrInvalidStep: the step names an action or a target the executor does not handle.
	ErrInvalidStep = errors.New("invalid step")
	// ErrForbidden: the API server refused the write: the namespace has not opted in
	// (no RoleBinding to RemediationRole), or the admission policy denied it.
	ErrForbidden = errors.New("forbidden")
)

// IsPermanent reports whether err from Execute will not go away by retrying.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrWorkloadGone) || errors.Is(err, ErrDeploymentPaused) ||
		errors.Is(err, ErrInvalidStep) || errors.Is(err, ErrForbidden)
}

// writeError classifies an error of a write on target.
func writeError(err error, what string, target selfhealv1alpha1.WorkloadReference) error {
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: %s", ErrWorkloadGone, target)
	case apierrors.IsForbidden(err), apierrors.IsInvalid(err):
		// RBAC (no opt-in) or the admission policy: retrying cannot help.
		return fmt.Errorf("%w: %s %s: %w", ErrForbidden, what, target, err)
	}
	return fmt.Errorf("%s %s: %w", what, target, err)
}

// Executor performs one planned step. It never edits images, resources or network
// policies, and acts only in the namespace it is given.
type Executor struct {
	// Client writes; its scheme must know apps/v1, core/v1 and autoscaling/v1.
	Client client.Client
	// APIReader reads uncached, right before acting, where a stale cache would cause a
	// wrong action (a paused Deployment restarted, a scaled-up workload scaled again).
	APIReader client.Reader
	// Clock stamps the restartedAt annotation.
	Clock clock.PassiveClock
}

// Execute performs step on its target in namespace and says what it did. snap, when
// given, is the diagnosis the step was planned from: a workload whose UID differs from
// the one diagnosed is treated as gone.
func (e *Executor) Execute(ctx context.Context, namespace string, step Step, snap *diagnostics.Snapshot) (string, error) {
	if err := validWorkload(step.Workload); err != nil {
		return "", err
	}
	if namespace == "" {
		return "", fmt.Errorf("%w: empty namespace", ErrInvalidStep)
	}
	if snap != nil && snap.Target.Namespace != "" && snap.Target.Namespace != namespace {
		return "", fmt.Errorf("%w: snapshot of namespace %q used in namespace %q", ErrInvalidStep, snap.Target.Namespace, namespace)
	}
	log := ctrl.LoggerFrom(ctx).WithValues("action", step.Type, "workload", step.Workload.String(), "namespace", namespace)

	// The workload as diagnosed goes first: the restart and the scale carry its
	// resourceVersion, so the API server applies them only if nothing changed the
	// workload since the diagnosis, which showed the action not yet run. That is the
	// uncached confirmation, made atomically with the write. A conflict (the cache was
	// behind, or the action already ran) reads the workload uncached and decides again.
	if obj := diagnosedWorkload(namespace, step, snap); obj != nil {
		msg, err := e.apply(ctx, log, step, obj)
		if !apierrors.IsConflict(err) {
			return msg, err
		}
	}
	obj, err := e.liveWorkload(ctx, namespace, step.Workload, snap)
	if err != nil {
		return "", err
	}
	return e.apply(ctx, log, step, obj)
}

// apply performs step on obj, a workload read with the resourceVersion to write on.
func (e *Executor) apply(ctx context.Context, log logr.Logger, step Step, obj client.Object) (string, error) {
	switch step.Type {
	case selfhealv1alpha1.ActionRolloutRestart:
		log.Info("Restarting workload")
		return e.rolloutRestart(ctx, obj, step)
	case selfhealv1alpha1.ActionScaleFromZero:
		log.Info("Scaling workload from zero")
		return e.scaleFromZero(ctx, obj, step.Workload)
	case selfhealv1alpha1.ActionDeleteFailedPods:
		log.Info("Deleting failed pods of workload")
		return e.deleteFailedPods(ctx, obj, step.Workload)
	}
	return "", fmt.Errorf("%w: unknown action %q", ErrInvalidStep, step.Type)
}

// diagnosedWorkload is a copy of the workload snap diagnosed when, going by it, step
// would write (a restart not yet stamped on a Deployment not paused, a scale of zero
// replicas), so that the API server confirms it; otherwise nil, and a decision not to
// write is made on the uncached read only. Deleting failed pods lists them uncached.
func diagnosedWorkload(namespace string, step Step, snap *diagnostics.Snapshot) client.Object {
	if snap == nil {
		return nil
	}
	var obj client.Object
	switch {
	case step.Workload.Kind == selfhealv1alpha1.WorkloadDeployment && snap.Deployment != nil:
		if snap.Deployment.Spec.Paused {
			return nil
		}
		obj = snap.Deployment.DeepCopy()
	case step.Workload.Kind == selfhealv1alpha1.WorkloadStatefulSet && snap.StatefulSet != nil:
		obj = snap.StatefulSet.DeepCopy()
	default:
		return nil
	}
	if obj.GetName() != step.Workload.Name || obj.GetNamespace() != namespace ||
		obj.GetResourceVersion() == "" || obj.GetDeletionTimestamp() != nil {
		return nil
	}
	switch step.Type {
	case selfhealv1alpha1.ActionRolloutRestart:
		if _, done := restartedSince(obj, step.At); done || step.At.IsZero() {
			return nil
		}
	case selfhealv1alpha1.ActionScaleFromZero:
		if replicas, _ := diagnostics.DesiredReplicas(obj); replicas != 0 {
			return nil
		}
	default:
		return nil
	}
	return obj
}

// validWorkload accepts a Deployment or StatefulSet with a name.
func validWorkload(w selfhealv1alpha1.WorkloadReference) error {
	if w.Name == "" || strings.Contains(w.Name, "/") {
		return fmt.Errorf("%w: workload name %q", ErrInvalidStep, w.Name)
	}
	switch w.Kind {
	case selfhealv1alpha1.WorkloadDeployment, selfhealv1alpha1.WorkloadStatefulSet:
		return nil
	}
	return fmt.Errorf("%w: workload kind %q is neither Deployment nor StatefulSet", ErrInvalidStep, w.Kind)
}

// liveWorkload reads the workload uncached and checks it is the one diagnosed.
func (e *Executor) liveWorkload(ctx context.Context, namespace string, target selfhealv1alpha1.WorkloadReference,
	snap *diagnostics.Snapshot) (client.Object, error) {
	var obj client.Object
	var diagnosed types.UID
	name := target.Name
	switch target.Kind {
	case selfhealv1alpha1.WorkloadDeployment:
		obj = &appsv1.Deployment{}
		if snap != nil && snap.Deployment != nil && snap.Deployment.Name == name {
			diagnosed = snap.Deployment.UID
		}
	default:
		obj = &appsv1.StatefulSet{}
		if snap != nil && snap.StatefulSet != nil && snap.StatefulSet.Name == name {
			diagnosed = snap.StatefulSet.UID
		}
	}
	if err := e.APIReader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: %s in namespace %q", ErrWorkloadGone, target, namespace)
		}
		return nil, fmt.Errorf("reading %s: %w", target, err)
	}
	if diagnosed != "" && obj.GetUID() != diagnosed {
		return nil, fmt.Errorf("%w: %s was replaced since the diagnosis (uid %s, diagnosed %s)",
			ErrWorkloadGone, target, obj.GetUID(), diagnosed)
	}
	if obj.GetDeletionTimestamp() != nil {
		return nil, fmt.Errorf("%w: %s is being deleted", ErrWorkloadGone, target)
	}
	return obj, nil
}

// rolloutRestart makes the change kubectl rollout restart makes: it stamps the pod
// template with the restart time, so the workload controller rolls every pod. The
// patch carries the resourceVersion that was read, so a Deployment paused (or changed)
// in between makes it fail with a conflict instead of restarting a paused Deployment.
func (e *Executor) rolloutRestart(ctx context.Context, obj client.Object, step Step) (string, error) {
	target := step.Workload
	if d, ok := obj.(*appsv1.Deployment); ok && d.Spec.Paused {
		return "", fmt.Errorf("%w: %s; resume it (kubectl rollout resume %s) or heal it by hand", ErrDeploymentPaused, target, target)
	}
	at := step.At
	if at.IsZero() {
		at = e.Clock.Now()
	}
	now := RestartStamp(at)
	if current, done := restartedSince(obj, at); done {
		if current == now {
			return fmt.Sprintf("%s was already restarted for this intent (%s=%s)", target, RestartedAtAnnotation, now), nil
		}
		// A later intent (or a person) restarted it since: restarting now for this
		// older one, a late reconcile's, would be a second restart.
		return fmt.Sprintf("%s was restarted after this intent (%s=%s, intent %s): not restarted again", target, RestartedAtAnnotation, current, now), nil
	}
	patch := map[string]any{
		"metadata": map[string]any{"resourceVersion": obj.GetResourceVersion()},
		"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
			"annotations": map[string]string{RestartedAtAnnotation: now},
		}}},
	}
	data, err := json.Marshal(patch)
	if err != nil {
		return "", fmt.Errorf("encoding restart patch: %w", err)
	}
	if err := e.Client.Patch(ctx, obj, client.RawPatch(types.StrategicMergePatchType, data)); err != nil {
		return "", writeError(err, "restarting", target)
	}
	return fmt.Sprintf("Restarted %s (%s=%s)", target, RestartedAtAnnotation, now), nil
}

// scaleFromZero sets replicas to 1 through the scale subresource, only when the live
// workload has 0 replicas. The scale carries the resourceVersion that was read, so a
// concurrent scale makes it fail with a conflict instead of overriding it.
func (e *Executor) scaleFromZero(ctx context.Context, obj client.Object, target selfhealv1alpha1.WorkloadReference) (string, error) {
	if replicas, _ := diagnostics.DesiredReplicas(obj); replicas != 0 {
		return fmt.Sprintf("%s already wants %d replicas: not scaled", target, replicas), nil
	}
	scale := &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{
			Name:            obj.GetName(),
			Namespace:       obj.GetNamespace(),
			ResourceVersion: obj.GetResourceVersion(),
		},
		Spec: autoscalingv1.ScaleSpec{Replicas: 1},
	}
	if err := e.Client.SubResource("scale").Update(ctx, obj, client.WithSubResourceBody(scale)); err != nil {
		return "", writeError(err, "scaling", target)
	}
	return fmt.Sprintf("Scaled %s from 0 to 1 replica", target), nil
}

// deleteFailedPods deletes the pods in phase Failed that the workload owns (through a
// ReplicaSet for a Deployment). Each delete carries the pod's UID as a precondition, so
// a pod that was replaced under the same name (a StatefulSet's) is never deleted.
func (e *Executor) deleteFailedPods(ctx context.Context, obj client.Object, target selfhealv1alpha1.WorkloadReference) (string, error) {
	owners := map[types.UID]bool{}
	var selector *metav1.LabelSelector
	switch w := obj.(type) {
	case *appsv1.StatefulSet:
		owners[w.UID] = true
		selector = w.Spec.Selector
	case *appsv1.Deployment:
		selector = w.Spec.Selector
		var rsList appsv1.ReplicaSetList
		if err := e.APIReader.List(ctx, &rsList, client.InNamespace(w.Namespace)); err != nil {
			return "", fmt.Errorf("listing replicasets of %s: %w", target, err)
		}
		for i := range rsList.Items {
			if ref := metav1.GetControllerOf(&rsList.Items[i]); ref != nil && ref.UID == w.UID {
				owners[rsList.Items[i].UID] = true
			}
		}
	}
	if selector == nil {
		return "", fmt.Errorf("%w: %s has no selector", ErrInvalidStep, target)
	}
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return "", fmt.Errorf("%w: selector of %s: %w", ErrInvalidStep, target, err)
	}

	var pods corev1.PodList
	if err := e.APIReader.List(ctx, &pods, client.InNamespace(obj.GetNamespace()),
		client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return "", fmt.Errorf("listing pods of %s: %w", target, err)
	}
	var deleted []string
	for i := range pods.Items {
		pod := &pods.Items[i]
		ref := metav1.GetControllerOf(pod)
		if pod.Status.Phase != corev1.PodFailed || pod.DeletionTimestamp != nil || ref == nil || !owners[ref.UID] {
			continue
		}
		uid := pod.UID
		err := e.Client.Delete(ctx, pod, client.Preconditions{UID: &uid})
		switch {
		case err == nil:
			deleted = append(deleted, pod.Name)
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			// Gone already, or replaced by a new pod of the same name: not ours to delete.
		case apierrors.IsForbidden(err), apierrors.IsInvalid(err):
			return "", fmt.Errorf("%w: deleting failed pod %s of %s (after deleting %d): %w", ErrForbidden, pod.Name, target, len(deleted), err)
		default:
			return "", fmt.Errorf("deleting failed pod %s of %s (after deleting %d): %w", pod.Name, target, len(deleted), err)
		}
	}
	sort.Strings(deleted)
	if len(deleted) == 0 {
		return fmt.Sprintf("No failed pods of %s to delete", target), nil
	}
	return fmt.Sprintf("Deleted %s of %s: %s", countPods(len(deleted), "failed"), target, nameList(deleted)), nil
}

// podTemplateAnnotations are the pod-template annotations of a Deployment or StatefulSet.
func podTemplateAnnotations(obj client.Object) map[string]string {
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return w.Spec.Template.Annotations
	case *appsv1.StatefulSet:
		return w.Spec.Template.Annotations
	}
	return nil
}
