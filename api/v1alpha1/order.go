package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// CreatedBefore orders objects by creation, then by name: creation timestamps have
// one-second resolution, and every replica and worker must break ties the same way.
// It is the one ordering behind "the oldest policy" and "the oldest active request".
func CreatedBefore(a, b metav1.Object) bool {
	ta, tb := a.GetCreationTimestamp(), b.GetCreationTimestamp()
	if !ta.Equal(&tb) {
		return ta.Before(&tb)
	}
	return a.GetName() < b.GetName()
}
