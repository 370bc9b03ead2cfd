package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
)

var k8s client.Client

func TestMain(m *testing.M) {
	cp, err := controlplane.Start(context.Background(), controlplane.Options{Progress: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting kube-apiserver:", err)
		os.Exit(1)
	}
	k8s = cp.Client
	code := m.Run()
	_ = cp.Stop()
	os.Exit(code)
}

func namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "api-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func validRequest(ns string) *selfhealv1alpha1.HealingRequest {
	return &selfhealv1alpha1.HealingRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "hr-"},
		Spec: selfhealv1alpha1.HealingRequestSpec{
			Target:  selfhealv1alpha1.HealingTarget{Service: "sandfly-mcp-server"},
			Trigger: selfhealv1alpha1.HealingTrigger{Source: selfhealv1alpha1.TriggerSourceGateway, FailureClass: selfhealv1alpha1.FailureConnectionRefused},
		},
	}
}

func validPolicy(ns string) *selfhealv1alpha1.HealingPolicy {
	return &selfhealv1alpha1.HealingPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "hp-"},
		Spec:       selfhealv1alpha1.HealingPolicySpec{AllowedActions: []selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionRolloutRestart}},
	}
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

// expectInvalid asserts the API server rejects the create with its message.
func expectInvalid(t *testing.T, err error, wantMessage string) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected rejection containing %q, object was accepted", wantMessage)
	}
	if !apierrors.IsInvalid(err) {
		t.Fatalf("expected an Invalid error, got %v", err)
	}
	if !strings.Contains(err.Error(), wantMessage) {
		t.Fatalf("expected message containing %q, got %q", wantMessage, err.Error())
	}
}

func TestHealingRequestValidation(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	cases := []struct {
		name   string
		mutate func(*selfhealv1alpha1.HealingRequest)
		want   string // empty: accepted
	}{
		{"minimal", func(*selfhealv1alpha1.HealingRequest) {}, ""},
		{"full", func(r *selfhealv1alpha1.HealingRequest) {
			r.Spec.Target.Workload = &selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: "sandfly-mcp-server"}
			r.Spec.Trigger = selfhealv1alpha1.HealingTrigger{Source: selfhealv1alpha1.TriggerSourceChatAPI, FailureClass: selfhealv1alpha1.FailureHTTP5xx,
				HTTPStatus: 503, Message: "upstream 503", Upstream: "sandfly", Time: ptr.To(metav1.Now())}
			r.Spec.PolicyName = "default"
			r.Spec.DryRun = true
		}, ""},
		{"empty target", func(r *selfhealv1alpha1.HealingRequest) { r.Spec.Target.Service = "" }, "spec.target.service"},
		{"bad service name", func(r *selfhealv1alpha1.HealingRequest) { r.Spec.Target.Service = "Bad_Name" }, "spec.target.service"},
		{"unknown source", func(r *selfhealv1alpha1.HealingRequest) { r.Spec.Trigger.Source = "pager" }, `Unsupported value: "pager"`},
		{"unknown failure class", func(r *selfhealv1alpha1.HealingRequest) { r.Spec.Trigger.FailureClass = "Meteor" }, `Unsupported value: "Meteor"`},
		{"unknown workload kind", func(r *selfhealv1alpha1.HealingRequest) {
			r.Spec.Target.Workload = &selfhealv1alpha1.WorkloadReference{Kind: "DaemonSet", Name: "x"}
		}, `Unsupported value: "DaemonSet"`},
		{"http status without 5xx class", func(r *selfhealv1alpha1.HealingRequest) { r.Spec.Trigger.HTTPStatus = 503 }, "httpStatus is only allowed with failureClass HTTP5xx"},
		{"http status out of range", func(r *selfhealv1alpha1.HealingRequest) {
			r.Spec.Trigger.FailureClass = selfhealv1alpha1.FailureHTTP5xx
			r.Spec.Trigger.HTTPStatus = 404
		}, "spec.trigger.httpStatus"},
		{"message too long", func(r *selfhealv1alpha1.HealingRequest) { r.Spec.Trigger.Message = strings.Repeat("x", 1025) }, "spec.trigger.message"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := validRequest(ns)
			tc.mutate(r)
			err := k8s.Create(ctx, r)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("expected accepted, got %v", err)
				}
				return
			}
			expectInvalid(t, err, tc.want)
		})
	}
}

func TestHealingRequestSpecIsImmutable(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	r := validRequest(ns)
	if err := k8s.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.Spec.Target.Service = "another-service"
	expectInvalid(t, k8s.Update(ctx, r), "spec is immutable; create a new HealingRequest")

	// Status and metadata stay writable.
	var fresh selfhealv1alpha1.HealingRequest
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(r), &fresh); err != nil {
		t.Fatal(err)
	}
	fresh.Labels = map[string]string{"selfheal.dev/service": "sandfly-mcp-server"}
	if err := k8s.Update(ctx, &fresh); err != nil {
		t.Fatalf("updating labels: %v", err)
	}
	fresh.Status.Phase = selfhealv1alpha1.PhaseDiagnosing
	if err := k8s.Status().Update(ctx, &fresh); err != nil {
		t.Fatalf("updating status: %v", err)
	}
	fresh.Status.Phase = "Exploded"
	expectInvalid(t, k8s.Status().Update(ctx, &fresh), `Unsupported value: "Exploded"`)
}

func TestHealingRequestStatusBounds(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	r := validRequest(ns)
	if err := k8s.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= selfhealv1alpha1.MaxProgress; i++ {
		r.Status.Progress = append(r.Status.Progress, selfhealv1alpha1.ProgressEntry{Time: metav1.Now(), Phase: selfhealv1alpha1.PhasePending, Message: "step"})
	}
	expectInvalid(t, k8s.Status().Update(ctx, r), "status.progress")
}

func TestHealingPolicyValidation(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	cases := []struct {
		name   string
		mutate func(*selfhealv1alpha1.HealingPolicy)
		want   string
	}{
		{"minimal", func(*selfhealv1alpha1.HealingPolicy) {}, ""},
		{"full", func(p *selfhealv1alpha1.HealingPolicy) {
			p.Spec.ServiceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"selfheal.dev/heal": "true"}}
			p.Spec.AllowedActions = []selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionRolloutRestart, selfhealv1alpha1.ActionScaleFromZero, selfhealv1alpha1.ActionDeleteFailedPods}
			p.Spec.Deadline = dur(90 * time.Second)
			p.Spec.MaxAttempts = ptr.To[int32](5)
			p.Spec.Cooldown = dur(0)
			p.Spec.CircuitBreaker = &selfhealv1alpha1.CircuitBreaker{Window: dur(30 * time.Minute), MaxActionsPerTarget: ptr.To[int32](2), NamespaceMaxActions: ptr.To[int32](5)}
			p.Spec.Retention = &selfhealv1alpha1.Retention{TTLAfterFinished: dur(time.Hour), MaxHistoryPerTarget: ptr.To[int32](5)}
			p.Spec.PauseRequests = []string{"oncall: migrating the cluster"}
			p.Spec.DryRun = true
		}, ""},
		{"deadline of 1h", func(p *selfhealv1alpha1.HealingPolicy) { p.Spec.Deadline = dur(time.Hour) }, "deadline must be between 10s and 10m"},
		{"deadline of 5s", func(p *selfhealv1alpha1.HealingPolicy) { p.Spec.Deadline = dur(5 * time.Second) }, "deadline must be between 10s and 10m"},
		{"attempts 0", func(p *selfhealv1alpha1.HealingPolicy) { p.Spec.MaxAttempts = ptr.To[int32](0) }, "spec.maxAttempts"},
		{"attempts 6", func(p *selfhealv1alpha1.HealingPolicy) { p.Spec.MaxAttempts = ptr.To[int32](6) }, "spec.maxAttempts"},
		{"unknown action", func(p *selfhealv1alpha1.HealingPolicy) {
			p.Spec.AllowedActions = []selfhealv1alpha1.ActionType{"DeleteNamespace"}
		}, `Unsupported value: "DeleteNamespace"`},
		{"no actions", func(p *selfhealv1alpha1.HealingPolicy) { p.Spec.AllowedActions = nil }, "spec.allowedActions"},
		{"duplicate action", func(p *selfhealv1alpha1.HealingPolicy) {
			p.Spec.AllowedActions = []selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionRolloutRestart, selfhealv1alpha1.ActionRolloutRestart}
		}, "Duplicate value"},
		{"negative cooldown", func(p *selfhealv1alpha1.HealingPolicy) { p.Spec.Cooldown = dur(-time.Second) }, "cooldown must be between 0s and 24h"},
		{"storm limit below target limit", func(p *selfhealv1alpha1.HealingPolicy) {
			p.Spec.CircuitBreaker = &selfhealv1alpha1.CircuitBreaker{MaxActionsPerTarget: ptr.To[int32](5), NamespaceMaxActions: ptr.To[int32](2)}
		}, "namespaceMaxActions must be at least maxActionsPerTarget"},
		{"window too short", func(p *selfhealv1alpha1.HealingPolicy) {
			p.Spec.CircuitBreaker = &selfhealv1alpha1.CircuitBreaker{Window: dur(time.Second)}
		}, "window must be between 1m and 24h"},
		{"ttl too long", func(p *selfhealv1alpha1.HealingPolicy) {
			p.Spec.Retention = &selfhealv1alpha1.Retention{TTLAfterFinished: dur(24 * 365 * time.Hour)}
		}, "ttlAfterFinished must be between 1m and 90d"},
		{"bad selector", func(p *selfhealv1alpha1.HealingPolicy) {
			p.Spec.ServiceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}
		}, "serviceSelector operators must be In, NotIn, Exists or DoesNotExist"},
		{"selector In without values", func(p *selfhealv1alpha1.HealingPolicy) {
			p.Spec.ServiceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpIn}}}
		}, "In and NotIn need values"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := validPolicy(ns)
			tc.mutate(p)
			err := k8s.Create(ctx, p)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("expected accepted, got %v", err)
				}
				return
			}
			expectInvalid(t, err, tc.want)
		})
	}
}

// The CRD's defaults and the Go getters' defaults are one set of values.
func TestHealingPolicyDefaultsMatchGetters(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	p := validPolicy(ns)
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	var got selfhealv1alpha1.HealingPolicy
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), &got); err != nil {
		t.Fatal(err)
	}
	s := got.Spec
	if s.Deadline == nil || s.MaxAttempts == nil || s.Cooldown == nil || s.CircuitBreaker == nil ||
		s.CircuitBreaker.Window == nil || s.CircuitBreaker.MaxActionsPerTarget == nil ||
		s.CircuitBreaker.NamespaceMaxActions == nil || s.Retention == nil ||
		s.Retention.TTLAfterFinished == nil || s.Retention.MaxHistoryPerTarget == nil ||
		s.Learning == nil || s.Learning.MinAttempts == nil || s.Learning.Window == nil {
		t.Fatalf("the API server did not fill every default: %+v", s)
	}
	var empty selfhealv1alpha1.HealingPolicySpec
	checks := []struct {
		name      string
		crd, getr any
	}{
		{"deadline", s.Deadline.Duration, empty.GetDeadline()},
		{"maxAttempts", *s.MaxAttempts, empty.GetMaxAttempts()},
		{"cooldown", s.Cooldown.Duration, empty.GetCooldown()},
		{"window", s.CircuitBreaker.Window.Duration, empty.GetBreakerWindow()},
		{"maxActionsPerTarget", *s.CircuitBreaker.MaxActionsPerTarget, empty.GetMaxActionsPerTarget()},
		{"namespaceMaxActions", *s.CircuitBreaker.NamespaceMaxActions, empty.GetNamespaceMaxActions()},
		{"ttlAfterFinished", s.Retention.TTLAfterFinished.Duration, empty.GetTTLAfterFinished()},
		{"maxHistoryPerTarget", *s.Retention.MaxHistoryPerTarget, empty.GetMaxHistoryPerTarget()},
		{"learning.minAttempts", *s.Learning.MinAttempts, empty.GetLearningMinAttempts()},
		{"learning.window", s.Learning.Window.Duration, empty.GetLearningWindow()},
		{"learning enabled", !s.Learning.Disabled, empty.LearningEnabled()},
	}
	for _, c := range checks {
		if c.crd != c.getr {
			t.Errorf("%s: CRD default %v, getter default %v", c.name, c.crd, c.getr)
		}
	}
	if got.Spec.EffectiveMode() != selfhealv1alpha1.ModeActive {
		t.Errorf("mode: got %s", got.Spec.EffectiveMode())
	}
}

// The samples apply cleanly: they are what a user copies first.
func TestSamplesAreValid(t *testing.T) {
	ctx := context.Background()
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cortex-system"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "config", "samples", "selfheal_v1alpha1_*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("expected the samples, got %v (%v)", files, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(data, &obj); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var o client.Object
		switch obj["kind"] {
		case "HealingPolicy":
			o = &selfhealv1alpha1.HealingPolicy{}
		case "HealingRequest":
			o = &selfhealv1alpha1.HealingRequest{}
		default:
			t.Fatalf("%s: unexpected kind %v", f, obj["kind"])
		}
		if err := yaml.Unmarshal(data, o); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := k8s.Create(ctx, o); err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
	}
}
