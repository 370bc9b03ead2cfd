package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/demo/stack"
)

// reportFailure posts one failure report for the MCP server's Service, seen at seen,
// to gateway, as a chat backend that is not written in Go does, and returns the
// HealingRequest it was given.
func reportFailure(ctx context.Context, c *http.Client, gateway string, seen time.Time) (string, error) {
	body := fmt.Sprintf(`{"namespace":%q,"service":%q,"failureClass":"ConnectionRefused","message":"connection refused","time":%q}`,
		stack.Namespace, stack.Service, seen.Format(time.RFC3339Nano))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gateway+"/v1/healing-requests", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+env.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	var got struct{ Request string }
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusAccepted || got.Request == "" {
		return "", fmt.Errorf("report to %s: status %d, request %q (%v)", gateway, resp.StatusCode, got.Request, err)
	}
	return got.Request, nil
}

// reportsMakeOneRequest: the calls that failed during an outage are reported, 1,000
// over 3 s, alternating between the two gateway replicas, while the MCP server is
// healed and after: they make one HealingRequest with one action, and every reporter
// is given it. Each report says when its failure was seen: during the outage, so
// after the previous scenario's healing (a report without a time would join that one,
// ended less than healing.joinEndedWithin ago).
func reportsMakeOneRequest(ctx SpecContext) {
	before := existingRequests(ctx)
	Expect(env.Scale(ctx, 0)).To(Succeed())
	Expect(env.WaitServing(ctx, false)).To(Succeed())
	seen := time.Now()

	const reports = 1000
	gateways := []string{env.GatewayURL, env.SecondGatewayURL}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: time.Minute}
	var mu sync.Mutex
	given := map[string]int{}
	var errs []error
	var wg sync.WaitGroup
	// report sends n reports spread over d, each on the next replica.
	report := func(n int, d time.Duration) {
		tick := time.NewTicker(d / time.Duration(n))
		defer tick.Stop()
		for i := range n {
			<-tick.C
			wg.Go(func() {
				name, err := reportFailure(ctx, hc, gateways[i%2], seen)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				given[name]++
			})
		}
		wg.Wait()
	}
	start := time.Now()
	report(reports, 3*time.Second)
	spread := time.Since(start)
	Expect(errs).To(BeEmpty())
	Expect(spread).To(BeNumerically(">=", 3*time.Second-100*time.Millisecond), "the reports were spread over 3 s")

	hr := oneRequest(ctx, before)
	// Reports that arrive once the healing has ended join it too: sent after its end
	// was seen, however long the healing took on this machine.
	const late = 100
	report(late, 300*time.Millisecond)
	Expect(errs).To(BeEmpty())
	Expect(given).To(Equal(map[string]int{hr.Name: reports + late}),
		"every reporter, on either replica, was given the one request, the ones after its end too")
	Expect(requestsSince(ctx, before)).To(HaveLen(1))
	Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed))
	Expect(executedActions(hr)).To(Equal([]selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionScaleFromZero}))
}

// noActionIsNoHealing: a request for a Service that is already serving acts on
// nothing and ends Skipped (AlreadyHealthy): kubectl get hr, the healings metric and
// the policy's outcomes do not count it as a healing.
func noActionIsNoHealing(ctx SpecContext) {
	healedBefore := counter(scrape(env.MetricsURL), "selfheal_healings_total{", `outcome="Healed"`)
	policy := &selfhealv1alpha1.HealingPolicy{}
	Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(e2ePolicy()), policy)).To(Succeed())
	outcomesBefore := policy.Status.Outcomes.DeepCopy()

	hr := &selfhealv1alpha1.HealingRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: stack.Namespace, GenerateName: "sandfly-recheck-"},
		Spec: selfhealv1alpha1.HealingRequestSpec{
			Target:  selfhealv1alpha1.HealingTarget{Service: stack.Service},
			Trigger: selfhealv1alpha1.HealingTrigger{Source: selfhealv1alpha1.TriggerSourceManual, FailureClass: selfhealv1alpha1.FailureConnectionRefused},
		},
	}
	Expect(env.Client.Create(ctx, hr)).To(Succeed())
	ended(ctx, hr)
	Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseSkipped))
	Expect(readyCondition(*hr).Reason).To(Equal(selfhealv1alpha1.ReasonAlreadyHealthy))
	Expect(hr.Status.Actions).To(BeEmpty())

	out, err := env.KubectlRun(ctx, "get", "hr", "-n", stack.Namespace, hr.Name)
	Expect(err).NotTo(HaveOccurred())
	Expect(out).To(MatchRegexp(hr.Name + `\s+sandfly-mcp-server\s+Skipped\s`))
	Expect(counter(scrape(env.MetricsURL), "selfheal_healings_total{", `outcome="Healed"`)).To(Equal(healedBefore))
	Consistently(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(policy), policy)).To(Succeed())
		if outcomesBefore == nil {
			g.Expect(policy.Status.Outcomes == nil || policy.Status.Outcomes.Healed == 0).To(BeTrue(), "outcomes: %+v", policy.Status.Outcomes)
			return
		}
		g.Expect(policy.Status.Outcomes).NotTo(BeNil())
		g.Expect(policy.Status.Outcomes.Healed).To(Equal(outcomesBefore.Healed))
	}).WithTimeout(2 * time.Second).Should(Succeed())
}
