package controller_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controller"
	"github.com/selfheal-dev/selfheal/internal/scheme"
)

// A Service created a moment before its request may not be in the cache yet: "no
// policy" is concluded from the API server's Service, not from the empty labels of one
// the cache has not seen. Catches: the e2e handover flake where a new leader, its cache
// behind, ended a request for a just-created Service Skipped with NoPolicy.
func TestPolicyOfAServiceTheCacheHasNotSeen(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	heal := map[string]string{"selfheal.dev/heal": "true"}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fresh", Labels: heal},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "fresh"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if err := k8s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	want := policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) {
		p.Spec.ServiceSelector = &metav1.LabelSelector{MatchLabels: heal}
	})
	// The cached client has seen nothing yet; the API server has both.
	r := &controller.HealingRequestReconciler{Client: fake.NewClientBuilder().WithScheme(scheme.New()).Build(), APIReader: k8s}
	got, err := r.FindPolicy(ctx, &selfhealv1alpha1.HealingRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fresh-1"},
		Spec:       selfhealv1alpha1.HealingRequestSpec{Target: selfhealv1alpha1.HealingTarget{Service: "fresh"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Name != want.Name {
		t.Fatalf("policy %v, want %s: the Service's labels must be read where the policies were", got, want.Name)
	}
}
