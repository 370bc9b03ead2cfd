package stack

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/analytics"
)

// UIURL is the gateway's /ui page.
func (s *Stack) UIURL() string { return s.GatewayURL + "/ui/" }

// Analytics summarizes the MCP server's namespace as the /ui page does.
func (s *Stack) Analytics(ctx context.Context) (analytics.Summary, error) {
	var list selfhealv1alpha1.HealingPolicyList
	if err := s.Client.List(ctx, &list, client.InNamespace(Namespace)); err != nil {
		return analytics.Summary{}, err
	}
	return analytics.Summarize(list.Items, nil), nil
}

// WaitAnalytics waits until the namespace's outcomes count at least healings (the
// controller records a healing in the same update that settles its ledger, just
// after the request ends) and returns the summary.
func (s *Stack) WaitAnalytics(ctx context.Context, healings int64, timeout time.Duration) (analytics.Summary, error) {
	var sum analytics.Summary
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var err error
		if sum, err = s.Analytics(ctx); err != nil {
			return false, nil //nolint:nilerr // keep trying through transient errors
		}
		return sum.Healings >= healings, nil
	})
	return sum, err
}
