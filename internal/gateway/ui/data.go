package ui

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrl "sigs.k8s.io/controller-runtime/pkg/log"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/analytics"
	"github.com/selfheal-dev/selfheal/internal/gateway/access"
)

// DefaultMaxHistory is how many HealingRequests the page lists, newest first.
const DefaultMaxHistory = 50

// readTimeout bounds the cache reads of one data request.
const readTimeout = 10 * time.Second

// Request is one HealingRequest as the page shows it.
type Request struct {
	Name         string     `json:"name"`
	Namespace    string     `json:"namespace"`
	Service      string     `json:"service"`
	Upstream     string     `json:"upstream,omitempty"`
	FailureClass string     `json:"failureClass,omitempty"`
	Phase        string     `json:"phase"`
	Issue        string     `json:"issue,omitempty"`
	Reason       string     `json:"reason,omitempty"`
	Message      string     `json:"message,omitempty"`
	Created      time.Time  `json:"created"`
	Completed    *time.Time `json:"completed,omitempty"`
	Held         int        `json:"held"`
	Findings     []Finding  `json:"findings"`
	Actions      []Action   `json:"actions"`
	Progress     []Step     `json:"progress"`
}

// Finding is one diagnostic finding.
type Finding struct {
	Check   string `json:"check"`
	Result  string `json:"result"`
	Message string `json:"message"`
}

// Action is one remediation action.
type Action struct {
	Type    string    `json:"type"`
	Outcome string    `json:"outcome"`
	Message string    `json:"message,omitempty"`
	At      time.Time `json:"at"`
}

// Step is one progress entry.
type Step struct {
	Phase   string    `json:"phase"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// History is the answer of /ui/api/history.
type History struct {
	Client   string    `json:"client,omitempty"`
	Requests []Request `json:"requests"`
	// Total is how many requests the viewer may see; Requests holds the newest.
	Total int `json:"total"`
}

// namespaces the viewer may read: the watched ones it is allowed, or [""] (all) when
// the gateway watches every namespace (Summarize and AllowsTarget then filter).
func (h *Handler) namespaces(c *access.Client) []string {
	if len(h.opts.Namespaces) == 0 {
		return []string{""}
	}
	var out []string
	for _, ns := range h.opts.Namespaces {
		if c.AllowsNamespace(ns) {
			out = append(out, ns)
		}
	}
	return out
}

// list reads list in every namespace the viewer may see, appending with add.
func (h *Handler) list(ctx context.Context, c *access.Client, list client.ObjectList, add func()) error {
	for _, ns := range h.namespaces(c) {
		if err := h.opts.Reader.List(ctx, list, client.InNamespace(ns)); err != nil {
			return err
		}
		add()
	}
	return nil
}

func (h *Handler) readable(w http.ResponseWriter, r *http.Request) (context.Context, context.CancelFunc, bool) {
	if h.opts.Reader == nil {
		jsonError(w, http.StatusServiceUnavailable, "no cluster: the gateway runs without Kubernetes, so there is no history")
		return nil, nil, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	return ctx, cancel, true
}

func (h *Handler) history(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, ok := h.readable(w, r)
	if !ok {
		return
	}
	defer cancel()
	c := access.FromContext(r.Context())
	var all []selfhealv1alpha1.HealingRequest
	var list selfhealv1alpha1.HealingRequestList
	if err := h.list(ctx, c, &list, func() {
		for i := range list.Items {
			hr := &list.Items[i]
			if c.AllowsTarget(access.Target{Namespace: hr.Namespace, Service: hr.Spec.Target.Service}) {
				all = append(all, *hr)
			}
		}
	}); err != nil {
		h.readFailed(w, r, err)
		return
	}
	slices.SortFunc(all, func(a, b selfhealv1alpha1.HealingRequest) int {
		if selfhealv1alpha1.CreatedBefore(&a, &b) {
			return 1
		}
		if selfhealv1alpha1.CreatedBefore(&b, &a) {
			return -1
		}
		return 0
	})
	out := History{Client: c.ClientName(), Total: len(all), Requests: []Request{}}
	for i := range all[:min(len(all), h.opts.MaxHistory)] {
		out.Requests = append(out.Requests, h.view(&all[i]))
	}
	writeJSON(w, out)
}

func (h *Handler) view(hr *selfhealv1alpha1.HealingRequest) Request {
	v := Request{Name: hr.Name, Namespace: hr.Namespace, Service: hr.Spec.Target.Service, Upstream: hr.Spec.Trigger.Upstream,
		FailureClass: string(hr.Spec.Trigger.FailureClass), Phase: string(cmp.Or(hr.Status.Phase, selfhealv1alpha1.PhasePending)),
		Issue: string(hr.Status.Issue), Created: hr.CreationTimestamp.Time, Held: h.opts.Held(hr.Namespace, hr.Name),
		Findings: []Finding{}, Actions: []Action{}, Progress: []Step{}}
	if hr.Status.CompletionTime != nil {
		t := hr.Status.CompletionTime.Time
		v.Completed = &t
	}
	if ready := meta.FindStatusCondition(hr.Status.Conditions, selfhealv1alpha1.ConditionReady); ready != nil {
		v.Reason, v.Message = ready.Reason, ready.Message
	}
	for _, f := range hr.Status.Findings {
		v.Findings = append(v.Findings, Finding{Check: string(f.Check), Result: string(f.Result), Message: f.Message})
	}
	for _, a := range hr.Status.Actions {
		v.Actions = append(v.Actions, Action{Type: string(a.Type), Outcome: string(a.Outcome), Message: a.Message, At: a.StartedAt.Time})
	}
	for _, p := range hr.Status.Progress {
		v.Progress = append(v.Progress, Step{Phase: string(p.Phase), Message: p.Message, At: p.Time.Time})
	}
	return v
}

func (h *Handler) analytics(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, ok := h.readable(w, r)
	if !ok {
		return
	}
	defer cancel()
	c := access.FromContext(r.Context())
	var policies []selfhealv1alpha1.HealingPolicy
	var list selfhealv1alpha1.HealingPolicyList
	if err := h.list(ctx, c, &list, func() { policies = append(policies, list.Items...) }); err != nil {
		h.readFailed(w, r, err)
		return
	}
	writeJSON(w, analytics.Summarize(policies, func(ns, svc string) bool {
		if svc == "" {
			return c.AllowsNamespace(ns)
		}
		return c.AllowsTarget(access.Target{Namespace: ns, Service: svc})
	}))
}

// readFailed answers a failed cache read; the cause (API server, RBAC) is for the log.
func (h *Handler) readFailed(w http.ResponseWriter, r *http.Request, err error) {
	ctrl.FromContext(r.Context()).Error(err, "Reading for /ui failed", "path", r.URL.Path)
	jsonError(w, http.StatusServiceUnavailable, "reading from the cluster failed (see the gateway log)")
}
