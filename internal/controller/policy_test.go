package controller_test

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controller"
)

// unseenService is a cache that has not seen one Service yet, as a new leader's may
// not: it answers NotFound for it.
type unseenService struct {
	client.Client
	key client.ObjectKey
}

func (u *unseenService) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Service); ok && key == u.key {
		return apierrors.NewNotFound(corev1.Resource("services"), key.Name)
	}
	return u.Client.Get(ctx, key, obj, opts...)
}

// A Service created a moment before its request may not be in the cache yet: "no
// policy" is concluded from the API server's Service, not from the empty labels of one
// the cache has not seen. Catches: the e2e handover flake where a new leader, its cache
// behind, ended a request for a just-created Service Skipped with NoPolicy.
func TestPolicyOfAServiceTheCacheHasNotSeen(t *testing.T) {
	ns := newNamespace(t)
	unseen := &unseenService{key: client.ObjectKey{Namespace: ns, Name: "fresh"}}
	defer startManager(t, func(mgr ctrl.Manager, o *controller.Options) {
		unseen.Client = mgr.GetClient()
		o.Client = unseen
	})()
	app(t, ns, "fresh", 0) // its Service has the label selfheal.dev/heal=true
	want := policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) {
		p.Spec.ServiceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"selfheal.dev/heal": "true"}}
	})
	got := terminal(t, request(t, ns, "fresh"))
	g := NewWithT(t)
	g.Expect(got.Status.Policy).To(Equal(want.Name), "progress: %v", got.Status.Progress)
	g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed))
}
