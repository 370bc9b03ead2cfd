package controlplane

import (
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/selfheal-dev/selfheal/internal/scheme"
)

// Scheme holds the Kubernetes built-in types and the selfheal API.
func Scheme() *runtime.Scheme { return scheme.New() }
