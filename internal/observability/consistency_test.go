package observability_test

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	"github.com/selfheal-dev/selfheal/internal/controller"
	"github.com/selfheal-dev/selfheal/internal/gateway"
)

// gatewayCollectors are the gateway's exported metric vectors. The gateway exports no
// list of them; TestGatewayCollectorsAreAll checks this one against the collectors its
// init registers, so a new gateway metric cannot be missed here.
var gatewayCollectors = []prometheus.Collector{gateway.UpstreamRequests, gateway.UpstreamLatency, gateway.Retries,
	gateway.ProcessingDelays, gateway.ProcessingDelaySeconds, gateway.HealingsTriggered}

// metric is a registered metric: its labels, and whether it is a histogram (queried
// as _bucket, _sum and _count).
type metric struct {
	labels    []string
	histogram bool
}

var descFields = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// registered describes every collector, after proving that the manager's registry
// (the one its metrics endpoint serves) holds it.
func registered(t *testing.T) map[string]metric {
	t.Helper()
	out := map[string]metric{}
	for _, c := range append(controller.Collectors(), gatewayCollectors...) {
		var already prometheus.AlreadyRegisteredError
		if err := metrics.Registry.Register(c); !errors.As(err, &already) {
			t.Fatalf("a collector is not registered with the manager's registry (Register: %v)", err)
		}
		_, histogram := c.(prometheus.Histogram)
		if _, ok := c.(*prometheus.HistogramVec); ok {
			histogram = true
		}
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := descFields.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read %s", d)
			}
			var labels []string
			for _, l := range strings.Split(m[2], ",") {
				if l = strings.TrimSpace(l); l != "" {
					labels = append(labels, l)
				}
			}
			out[m[1]] = metric{labels: labels, histogram: histogram}
		}
	}
	if len(out) < 10 {
		t.Fatalf("only %d metrics described: %v", len(out), out)
	}
	return out
}

func TestGatewayCollectorsAreAll(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot(t), "internal", "gateway", "metrics.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	ast.Inspect(f, func(n ast.Node) bool {
		if call, ok := n.(*ast.CallExpr); ok {
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "MustRegister" {
				for _, a := range call.Args {
					if id, ok := a.(*ast.Ident); ok {
						args = append(args, id.Name)
					}
				}
			}
		}
		return true
	})
	if len(args) != len(gatewayCollectors) {
		t.Fatalf("internal/gateway registers %d collectors (%v), this test knows %d: add the new one to gatewayCollectors",
			len(args), args, len(gatewayCollectors))
	}
}

// Queries: PromQL from the dashboard and the rules.
type query struct{ where, expr string }

func dashboardQueries(t *testing.T) []query {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "config", "grafana", "selfheal.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := yaml.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	var out []query
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			out = append(out, query{"panel " + p.Title, tg.Expr})
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		expr, _ := q["query"].(string)
		out = append(out, query{"variable " + v.Name, expr})
	}
	if len(out) < 6 {
		t.Fatalf("the dashboard has %d queries", len(out))
	}
	return out
}

func ruleQueries(t *testing.T) []query {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "config", "prometheus", "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Alert       string            `json:"alert"`
					Expr        string            `json:"expr"`
					For         string            `json:"for"`
					Labels      map[string]string `json:"labels"`
					Annotations map[string]string `json:"annotations"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(data, &rule); err != nil {
		t.Fatal(err)
	}
	if rule.Kind != "PrometheusRule" {
		t.Fatalf("kind %q", rule.Kind)
	}
	var out []query
	var alerts []string
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if r.For == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" ||
				r.Annotations["description"] == "" || r.Annotations["runbook"] == "" {
				t.Errorf("alert %s needs for, a severity label and summary, description and runbook annotations", r.Alert)
			}
			out = append(out, query{"alert " + r.Alert, r.Expr})
		}
	}
	for _, want := range []string{"SelfhealHealingFailingRepeatedly", "SelfhealStormLimitReached",
		"SelfhealManualInterventionWaiting", "SelfhealClaudeRetriesRising"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alert %s is missing", want)
		}
	}
	return out
}

var (
	stringLit   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	matchers    = regexp.MustCompile(`\{([^}]*)\}`)
	matcherName = regexp.MustCompile(`([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)`)
	ranges      = regexp.MustCompile(`\[[^\]]*\]`)
	grouping    = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	variables   = regexp.MustCompile(`\$\w+`)
	identifier  = regexp.MustCompile(`\b([a-zA-Z_][\w:]*)(\s*\()?`)
	labelValues = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)$`)
	keywords    = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}
)

// series is a metric name a query selects, with the labels it matches or groups on.
type series struct {
	name   string
	labels []string
}

// selected lists the metric names of a PromQL expression, without a PromQL parser:
// strings, ranges and variables are dropped, label matchers and grouping clauses are
// read for their label names, and every remaining identifier that is not a function
// call or a keyword is a metric name.
func selected(expr string) []series {
	if m := labelValues.FindStringSubmatch(strings.TrimSpace(expr)); m != nil {
		return []series{{m[1], []string{m[2]}}}
	}
	e := stringLit.ReplaceAllString(expr, `""`)
	e = variables.ReplaceAllString(e, "")
	e = ranges.ReplaceAllString(e, "")
	var grouped []string
	e = grouping.ReplaceAllStringFunc(e, func(s string) string {
		for _, l := range strings.Split(grouping.FindStringSubmatch(s)[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				grouped = append(grouped, l)
			}
		}
		return ""
	})
	var out []series
	// A matcher belongs to the identifier just before it: mark each with a token.
	var matched [][]string
	e = matchers.ReplaceAllStringFunc(e, func(s string) string {
		var names []string
		for _, m := range matcherName.FindAllStringSubmatch(s, -1) {
			names = append(names, m[1])
		}
		matched = append(matched, names)
		return " __matcher" + string(rune('a'+len(matched)-1)) + " "
	})
	for _, m := range identifier.FindAllStringSubmatch(e, -1) {
		name, call := m[1], m[2] != ""
		switch {
		case strings.HasPrefix(name, "__matcher"):
			if len(out) > 0 {
				out[len(out)-1].labels = append(out[len(out)-1].labels, matched[name[len("__matcher")]-'a']...)
			}
		case call || slices.Contains(keywords, name):
		default:
			out = append(out, series{name: name})
		}
	}
	// Grouping labels must exist on some selected metric; checked per query below.
	if len(grouped) > 0 {
		out = append(out, series{name: "", labels: grouped})
	}
	return out
}

func TestSelected(t *testing.T) {
	got := selected(`sum by (issue) (increase(selfheal_healing_outcomes_total{outcome="Healed", issue=~"$x"}[$__rate_interval]))
		/ clamp_min(sum(rate(selfheal_time_to_heal_seconds_count[5m] offset 1h)), 1e-9) > 0.5 and up`)
	names := []string{}
	for _, s := range got {
		names = append(names, s.name)
	}
	if want := []string{"selfheal_healing_outcomes_total", "selfheal_time_to_heal_seconds_count", "up", ""}; !slices.Equal(names, want) {
		t.Fatalf("selected = %v, want %v", names, want)
	}
	if !slices.Equal(got[0].labels, []string{"outcome", "issue"}) || !slices.Equal(got[3].labels, []string{"issue"}) {
		t.Errorf("labels = %v, %v", got[0].labels, got[3].labels)
	}
}

// TestDashboardAndRulesQueryRegisteredMetrics: every metric name the dashboard and the
// rules query is registered by the manager (or its gateway), with the labels they use.
func TestDashboardAndRulesQueryRegisteredMetrics(t *testing.T) {
	reg := registered(t)
	lookup := func(name string) (metric, bool) {
		if m, ok := reg[name]; ok && !m.histogram {
			return m, true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if m, ok := reg[strings.TrimSuffix(name, suffix)]; ok && m.histogram && strings.HasSuffix(name, suffix) {
				if suffix == "_bucket" {
					m.labels = append(slices.Clone(m.labels), "le")
				}
				return m, true
			}
		}
		return metric{}, false
	}
	queries := append(dashboardQueries(t), ruleQueries(t)...)
	for _, q := range queries {
		sel := selected(q.expr)
		var all []string // labels of every metric of the query
		n := 0
		for _, s := range sel {
			if s.name == "" {
				continue
			}
			n++
			m, ok := lookup(s.name)
			if !ok {
				t.Errorf("%s queries %s, which the manager does not register", q.where, s.name)
				continue
			}
			all = append(all, m.labels...)
			for _, l := range s.labels {
				if !slices.Contains(m.labels, l) {
					t.Errorf("%s matches label %q of %s, which has only %v", q.where, l, s.name, m.labels)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s selects no metric: %s", q.where, q.expr)
		}
		for _, s := range sel {
			if s.name != "" {
				continue
			}
			for _, l := range s.labels {
				if l != "le" && !slices.Contains(all, l) {
					t.Errorf("%s groups by %q, which none of its metrics has", q.where, l)
				}
			}
		}
	}
	t.Logf("%d queries over %d registered metrics", len(queries), len(reg))
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatal(err)
	}
	return dir
}
