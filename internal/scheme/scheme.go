// Package scheme is the one runtime.Scheme of selfheal's clients: the Kubernetes
// built-in types and the selfheal API. It links nothing else, so the manager binary
// does not carry the test control plane.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// New returns a scheme with the Kubernetes built-in types and the selfheal API.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(selfhealv1alpha1.AddToScheme(s))
	return s
}
