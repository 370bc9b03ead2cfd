package diagnostics

import (
	"fmt"
	"unicode/utf8"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// Bounds of a Finding, as the CRD enforces them on HealingRequest status.
const (
	MaxEvidenceItems  = 10
	MaxEvidenceLength = 512
	MaxMessageLength  = 1024
)

// Truncate cuts s to at most max bytes on a rune boundary, marking the cut with "…".
func Truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = "…"
	cut := max - len(mark)
	if cut < 0 {
		cut = 0
	}
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// evidence collects at most MaxEvidenceItems lines; when more are offered, the last
// slot says how many were left out.
type evidence struct {
	items []string
	total int
}

func (e *evidence) add(format string, args ...any) {
	e.total++
	if len(e.items) < MaxEvidenceItems {
		e.items = append(e.items, Truncate(Redact(fmt.Sprintf(format, args...)), MaxEvidenceLength))
	}
}

func (e *evidence) list() []string {
	if e.total <= MaxEvidenceItems {
		if len(e.items) == 0 {
			return nil
		}
		return e.items
	}
	out := make([]string, 0, MaxEvidenceItems)
	out = append(out, e.items[:MaxEvidenceItems-1]...)
	return append(out, fmt.Sprintf("… and %d more", e.total-(MaxEvidenceItems-1)))
}

func finding(check selfhealv1alpha1.CheckName, result selfhealv1alpha1.FindingResult, ev *evidence, format string, args ...any) selfhealv1alpha1.Finding {
	f := selfhealv1alpha1.Finding{
		Check:   check,
		Result:  result,
		Message: Truncate(Redact(fmt.Sprintf(format, args...)), MaxMessageLength),
	}
	if ev != nil {
		f.Evidence = ev.list()
	}
	return f
}

// Bound makes a finding fit the CRD limits and redacts it, whatever produced it:
// messages quote kubelet messages and log lines, which may carry credentials.
func Bound(f selfhealv1alpha1.Finding) selfhealv1alpha1.Finding {
	f.Message = Truncate(Redact(f.Message), MaxMessageLength)
	if f.Message == "" {
		f.Message = string(f.Check) + ": no message"
	}
	if len(f.Evidence) > MaxEvidenceItems {
		ev := &evidence{}
		for _, item := range f.Evidence {
			ev.add("%s", item) // add redacts
		}
		f.Evidence = ev.list()
		return f
	}
	out := make([]string, len(f.Evidence))
	for i := range f.Evidence {
		out[i] = Truncate(Redact(f.Evidence[i]), MaxEvidenceLength)
	}
	f.Evidence = out
	return f
}
