package controlplane

import (
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// Scheme holds the Kubernetes built-in types and the selfheal API.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(selfhealv1alpha1.AddToScheme(s))
	return s
}
