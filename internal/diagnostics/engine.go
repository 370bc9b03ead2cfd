package diagnostics

import (
	"context"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// Engine diagnoses a target. The controller holds one as a field so tests can swap it.
type Engine interface {
	// Diagnose gathers everything the checks read (Gatherer.Gather), runs the checks
	// and classifies the result.
	Diagnose(ctx context.Context, t Target, c Caller) (*Report, error)
	// Observe reads only what verification judges (Gatherer.Observe): the workload,
	// its pods and the Service's EndpointSlices. No checks run; its Facts and Classify
	// say what it shows.
	Observe(ctx context.Context, t Target) (*Snapshot, error)
}

// Report is one diagnosis: what was read, what each check found, and the one issue.
type Report struct {
	Snapshot *Snapshot
	// Findings has one entry per check, in check order, each within the CRD's bounds.
	Findings []selfhealv1alpha1.Finding
	Issue    selfhealv1alpha1.IssueType
	// Summary is one sentence about the issue, at most MaxMessageLength bytes.
	Summary string
}

type engine struct {
	gatherer *Gatherer
	checks   []Check
}

// NewEngine gathers with g and runs checks (DefaultChecks when none are given).
func NewEngine(g *Gatherer, checks ...Check) Engine {
	if len(checks) == 0 {
		checks = DefaultChecks()
	}
	return &engine{gatherer: g, checks: checks}
}

// Diagnose gathers the target's state once and evaluates it. It returns the gather's
// errors (transient API errors: retry) and never writes to the cluster.
func (e *engine) Diagnose(ctx context.Context, t Target, c Caller) (*Report, error) {
	s, err := e.gatherer.Gather(ctx, t, c)
	if err != nil {
		return nil, fmt.Errorf("gathering state of service %s/%s: %w", t.Namespace, t.Service, err)
	}
	r, err := Evaluate(s, e.checks...)
	if err != nil {
		return nil, err
	}
	ctrl.LoggerFrom(ctx).V(1).Info("Diagnosed service", "service", t.Namespace+"/"+t.Service, "issue", r.Issue)
	return r, nil
}

// Observe reads the target's state for verification, cheaply. It returns the reads'
// errors (transient API errors: retry) and never writes to the cluster.
func (e *engine) Observe(ctx context.Context, t Target) (*Snapshot, error) {
	s, err := e.gatherer.Observe(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("observing service %s/%s: %w", t.Namespace, t.Service, err)
	}
	return s, nil
}

// Evaluate runs the checks on a Snapshot and classifies the result; it is pure. A
// check that panics is a bug: it is reported as an error instead of crashing the
// manager.
func Evaluate(s *Snapshot, checks ...Check) (r *Report, err error) {
	facts := s.Facts()
	findings := make([]selfhealv1alpha1.Finding, 0, len(checks))
	for i, check := range checks {
		f, cerr := runCheck(check, s, facts)
		if cerr != nil {
			return nil, fmt.Errorf("check %d: %w", i, cerr)
		}
		findings = append(findings, Bound(f))
	}
	issue, summary := Classify(s, findings)
	return &Report{Snapshot: s, Findings: findings, Issue: issue, Summary: summary}, nil
}

func runCheck(check Check, s *Snapshot, facts *Facts) (f selfhealv1alpha1.Finding, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panicked: %v", p)
		}
	}()
	return check(s, facts), nil
}
