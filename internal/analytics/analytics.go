// Package analytics turns the outcomes that ledger HealingPolicies record
// (status.outcomes) into the figures people look at: success rate by issue, time
// to heal, the Services healed most, manual interventions waiting. The gateway's
// /ui page draws them and the demo prints their one-line form; both call Summarize,
// so the page and the line cannot disagree.
package analytics

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// MaxTopServices bounds Summary.TopServices across namespaces.
const MaxTopServices = selfhealv1alpha1.MaxTopServices

// Summary is the analytics of the namespaces summarized.
type Summary struct {
	Healings int64 `json:"healings"`
	Healed   int64 `json:"healed"`
	// SuccessRate is Healed/Healings in percent; 0 without healings.
	SuccessRate float64 `json:"successRate"`
	// AvgTimeToHealSeconds is the mean time to heal of the healed ones.
	AvgTimeToHealSeconds float64        `json:"avgTimeToHealSeconds"`
	ByIssue              []IssueSummary `json:"byIssue"`
	// TimeToHealBuckets counts the healed by time to heal; bucket i is
	// "<= TimeToHealBucketBounds[i] seconds", the last one is longer.
	TimeToHealBuckets      []int64          `json:"timeToHealBuckets"`
	TimeToHealBucketBounds []int64          `json:"timeToHealBucketBounds"`
	TopServices            []ServiceSummary `json:"topServices"`
	ManualWaiting          int              `json:"manualWaiting"`
	Manual                 []ManualSummary  `json:"manual"`
}

// IssueSummary is one issue, over every action taken on it.
type IssueSummary struct {
	Issue                string  `json:"issue"`
	Healings             int64   `json:"healings"`
	Healed               int64   `json:"healed"`
	SuccessRate          float64 `json:"successRate"`
	AvgTimeToHealSeconds float64 `json:"avgTimeToHealSeconds"`
}

// ServiceSummary is one Service among those healed most.
type ServiceSummary struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	Healings  int64  `json:"healings"`
	Healed    int64  `json:"healed"`
}

// ManualSummary is one manual intervention still waiting.
type ManualSummary struct {
	Namespace string    `json:"namespace"`
	Request   string    `json:"request"`
	Service   string    `json:"service"`
	Issue     string    `json:"issue,omitempty"`
	Reason    string    `json:"reason"`
	Message   string    `json:"message,omitempty"`
	At        time.Time `json:"at"`
}

// Summarize adds up the outcomes of policies. Only a namespace's ledger policy holds
// outcomes, so every namespace counts once. see, when not nil, says which
// namespaces and Services the viewer may see: a Service it may not see is left out
// of the top Services and the manual interventions, a namespace it may not see
// entirely.
func Summarize(policies []selfhealv1alpha1.HealingPolicy, see func(namespace, service string) bool) Summary {
	if see == nil {
		see = func(string, string) bool { return true }
	}
	s := Summary{
		ByIssue:                []IssueSummary{},
		TopServices:            []ServiceSummary{},
		Manual:                 []ManualSummary{},
		TimeToHealBuckets:      make([]int64, selfhealv1alpha1.TimeToHealBucketCount),
		TimeToHealBucketBounds: selfhealv1alpha1.TimeToHealBuckets[:],
	}
	issues := map[string]*IssueSummary{}
	healSeconds := map[string]int64{}
	var totalSeconds int64
	for i := range policies {
		p := &policies[i]
		o := p.Status.Outcomes
		if o == nil || !see(p.Namespace, "") {
			continue
		}
		s.Healings += o.Healings
		s.Healed += o.Healed
		for _, e := range o.ByIssue {
			is := issues[string(e.Issue)]
			if is == nil {
				is = &IssueSummary{Issue: string(e.Issue)}
				issues[is.Issue] = is
			}
			is.Healings += e.Healings
			is.Healed += e.Healed
			healSeconds[is.Issue] += e.TimeToHealSeconds
			totalSeconds += e.TimeToHealSeconds
			for b, n := range e.TimeToHealBuckets {
				if b < len(s.TimeToHealBuckets) {
					s.TimeToHealBuckets[b] += n
				}
			}
		}
		for _, t := range o.TopServices {
			if see(p.Namespace, t.Service) {
				s.TopServices = append(s.TopServices, ServiceSummary{Namespace: p.Namespace, Service: t.Service, Healings: t.Healings, Healed: t.Healed})
			}
		}
		for _, m := range o.ManualInterventions {
			if m.IsWaiting() && see(p.Namespace, m.Service) {
				s.Manual = append(s.Manual, ManualSummary{Namespace: p.Namespace, Request: m.Request, Service: m.Service,
					Issue: string(m.Issue), Reason: m.Reason, Message: m.Message, At: m.At.Time})
			}
		}
	}
	s.SuccessRate = percent(s.Healed, s.Healings)
	s.AvgTimeToHealSeconds = mean(totalSeconds, s.Healed)
	for _, is := range issues {
		is.SuccessRate = percent(is.Healed, is.Healings)
		is.AvgTimeToHealSeconds = mean(healSeconds[is.Issue], is.Healed)
		s.ByIssue = append(s.ByIssue, *is)
	}
	slices.SortFunc(s.ByIssue, func(a, b IssueSummary) int {
		return cmp.Or(cmp.Compare(b.Healings, a.Healings), strings.Compare(a.Issue, b.Issue))
	})
	slices.SortFunc(s.TopServices, func(a, b ServiceSummary) int {
		return cmp.Or(cmp.Compare(b.Healings, a.Healings), strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Service, b.Service))
	})
	s.TopServices = s.TopServices[:min(len(s.TopServices), MaxTopServices)]
	slices.SortFunc(s.Manual, func(a, b ManualSummary) int { return b.At.Compare(a.At) })
	s.ManualWaiting = len(s.Manual)
	return s
}

func percent(n, of int64) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

func mean(sum, n int64) float64 {
	if n == 0 {
		return 0
	}
	return float64(sum) / float64(n)
}

// Line is the summary in one line, as the demo prints it:
// "analytics: 1 healing, 100% healed, avg time to heal 1s, top service
// mcp-server (1), manual interventions waiting 0".
func (s Summary) Line() string {
	var b strings.Builder
	b.WriteString("analytics: ")
	b.WriteString(plural(s.Healings, "healing"))
	if s.Healings == 0 {
		fmt.Fprintf(&b, ", manual interventions waiting %d", s.ManualWaiting)
		return b.String()
	}
	fmt.Fprintf(&b, ", %.0f%% healed", s.SuccessRate)
	if s.Healed > 0 {
		fmt.Fprintf(&b, ", avg time to heal %s", seconds(s.AvgTimeToHealSeconds))
	}
	if len(s.TopServices) > 0 {
		t := s.TopServices[0]
		fmt.Fprintf(&b, ", top service %s (%d)", t.Service, t.Healings)
	}
	fmt.Fprintf(&b, ", manual interventions waiting %d", s.ManualWaiting)
	return b.String()
}

func plural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// seconds formats an average of times to heal, each recorded in whole seconds
// (rounded): 0 means each took under half a second.
func seconds(v float64) string {
	if v == 0 {
		return "<1s"
	}
	if v == float64(int64(v)) {
		return fmt.Sprintf("%ds", int64(v))
	}
	return fmt.Sprintf("%.1fs", v)
}
