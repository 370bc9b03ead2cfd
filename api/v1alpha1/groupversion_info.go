// Package v1alpha1 holds the selfheal.dev/v1alpha1 API: HealingRequest (one incident
// against one in-cluster Service) and HealingPolicy (what may be healed in a namespace,
// how, and within which safety limits).
//
// +kubebuilder:object:generate=true
// +groupName=selfheal.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "selfheal.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the Go types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion} //nolint:staticcheck // SA1019: the kubebuilder layout; the types' init functions register with it

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
