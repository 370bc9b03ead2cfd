package controller

import (
	"context"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// FindPolicy runs the policy lookup of one reconcile on hr, for the tests of package
// controller_test.
func (r *HealingRequestReconciler) FindPolicy(ctx context.Context, hr *selfhealv1alpha1.HealingRequest) (*selfhealv1alpha1.HealingPolicy, error) {
	return r.findPolicy(ctx, &scope{hr: hr})
}
