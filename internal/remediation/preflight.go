package remediation

import (
	"context"
	"errors"
	"fmt"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
)

// Missing names the writes that steps need in namespace and the API server would not
// allow selfheal's identity, asked with SelfSubjectAccessReviews (which every
// authenticated user may create). Empty when every step is permitted. Asking first
// means a namespace that has not opted in gets one clear answer before anything is
// reserved or recorded, instead of a Forbidden error in the middle of an attempt.
func (e *Executor) Missing(ctx context.Context, namespace string, steps []Step) ([]string, error) {
	var missing []string
	for _, st := range steps {
		attrs := writeAttributes(namespace, st)
		review := &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs},
		}
		if err := e.Client.Create(ctx, review); err != nil {
			return nil, fmt.Errorf("asking the API server whether %s on %s is allowed: %w", st.Type, st.Workload, err)
		}
		if !review.Status.Allowed {
			what := attrs.Verb + " " + attrs.Resource
			if attrs.Subresource != "" {
				what += "/" + attrs.Subresource
			}
			missing = append(missing, what)
		}
	}
	return missing, nil
}

// NotOptedIn is the message for a namespace whose RoleBinding is missing.
func NotOptedIn(namespace string, missing []string) string {
	return fmt.Sprintf("Namespace %q has not opted in to remediation: selfheal may not %s there. "+
		"Bind ClusterRole %s to selfheal's controller ServiceAccount with a RoleBinding in %q "+
		"(config/samples/remediation_rolebinding.yaml)", namespace, strings.Join(missing, ", "), RemediationRole, namespace)
}

// writeAttributes is the one write a step makes, as an access review asks it.
func writeAttributes(namespace string, st Step) authorizationv1.ResourceAttributes {
	workloads := "deployments"
	if st.Workload.Kind == selfhealv1alpha1.WorkloadStatefulSet {
		workloads = "statefulsets"
	}
	switch st.Type {
	case selfhealv1alpha1.ActionScaleFromZero:
		return authorizationv1.ResourceAttributes{Namespace: namespace, Group: "apps", Resource: workloads,
			Subresource: "scale", Verb: "update", Name: st.Workload.Name}
	case selfhealv1alpha1.ActionDeleteFailedPods:
		return authorizationv1.ResourceAttributes{Namespace: namespace, Resource: "pods", Verb: "delete"}
	}
	return authorizationv1.ResourceAttributes{Namespace: namespace, Group: "apps", Resource: workloads,
		Verb: "patch", Name: st.Workload.Name}
}

// Applied tells, from the live workload, whether a recorded intent was carried out:
// the restart stamp of the intent is on the pod template, or the workload no longer
// has zero replicas. A manager that acted and died before recording the outcome is
// told apart from one that never acted, so status never claims either wrongly. Failed
// pods are not checked: deleting them is not disruptive and leaves no mark.
func (e *Executor) Applied(ctx context.Context, namespace string, st Step) (bool, string, error) {
	obj, err := e.liveWorkload(ctx, namespace, st.Workload, nil)
	if errors.Is(err, ErrWorkloadGone) {
		return false, err.Error(), nil
	}
	if err != nil {
		return false, "", err
	}
	switch st.Type {
	case selfhealv1alpha1.ActionRolloutRestart:
		stamp := RestartStamp(st.At)
		if podTemplateAnnotations(obj)[RestartedAtAnnotation] == stamp {
			return true, fmt.Sprintf("%s carries this intent's restart stamp (%s)", st.Workload, stamp), nil
		}
		return false, fmt.Sprintf("%s does not carry this intent's restart stamp", st.Workload), nil
	case selfhealv1alpha1.ActionScaleFromZero:
		if replicas, _ := diagnostics.DesiredReplicas(obj); replicas > 0 {
			return true, fmt.Sprintf("%s wants %d replicas", st.Workload, replicas), nil
		}
		return false, fmt.Sprintf("%s still has 0 replicas", st.Workload), nil
	}
	return false, "not checked", nil
}
