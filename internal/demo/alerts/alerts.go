// Package alerts is the demo's example MCP server: it plays the "sandfly security
// alerts" server of the seed story with one tool, get_security_alerts, written with
// the official MCP Go SDK and served over Streamable HTTP on the loopback interface.
//
// The Server can be switched off and on like the process of a pod (SetServing closes
// and reopens its listener, so callers see a real "connection refused"), restarted
// (fresh MCP sessions, as after a pod restart) and made to hang (requests accepted but
// never answered, as a stuck process). Package follow drives it from a Deployment.
package alerts

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// ToolName is the name of the tool the server offers.
const ToolName = "get_security_alerts"

// Severities, from the most to the least urgent.
const (
	SeverityCritical = "critical"
	SeverityHigh     = "high"
	SeverityMedium   = "medium"
	SeverityLow      = "low"
)

var severityOrder = []string{SeverityCritical, SeverityHigh, SeverityMedium, SeverityLow}

// Alert is one security alert, as the tool returns it.
type Alert struct {
	ID         string    `json:"id"`
	Host       string    `json:"host"`
	Severity   string    `json:"severity"`
	Title      string    `json:"title"`
	DetectedAt time.Time `json:"detected_at"`
}

// Input is the tool's input.
type Input struct {
	Severity string `json:"severity,omitempty" jsonschema:"only return alerts of this severity: critical, high, medium or low"`
}

// Output is the tool's structured result.
type Output struct {
	Alerts []Alert `json:"alerts"`
	Count  int     `json:"count"`
}

// catalog is fixed so that every answer of the demo is reproducible.
var catalog = []Alert{
	{ID: "sf-1041", Host: "web-prod-03", Severity: SeverityCritical,
		Title:      "Suspicious process kworkerds running from /dev/shm",
		DetectedAt: time.Date(2026, 3, 14, 9, 12, 5, 0, time.UTC)},
	{ID: "sf-1042", Host: "bastion-01", Severity: SeverityHigh,
		Title:      "Reverse shell: bash connected to 185.220.101.4:4444",
		DetectedAt: time.Date(2026, 3, 14, 9, 27, 41, 0, time.UTC)},
	{ID: "sf-1043", Host: "db-prod-01", Severity: SeverityHigh,
		Title:      "root authorized_keys modified outside change window",
		DetectedAt: time.Date(2026, 3, 14, 10, 3, 18, 0, time.UTC)},
	{ID: "sf-1044", Host: "web-prod-01", Severity: SeverityMedium,
		Title:      "Hidden directory /var/tmp/.ICE-unix- with executable files",
		DetectedAt: time.Date(2026, 3, 14, 11, 45, 0, 0, time.UTC)},
	{ID: "sf-1045", Host: "ci-runner-02", Severity: SeverityLow,
		Title:      "Network interface eth1 in promiscuous mode",
		DetectedAt: time.Date(2026, 3, 14, 12, 30, 9, 0, time.UTC)},
}

// Alerts returns the alerts of the given severity (all of them when severity is
// empty), most urgent first. An unknown severity is an error.
func Alerts(severity string) ([]Alert, error) {
	severity = strings.ToLower(strings.TrimSpace(severity))
	if severity != "" && !slices.Contains(severityOrder, severity) {
		return nil, fmt.Errorf("unknown severity %q: use one of %s", severity, strings.Join(severityOrder, ", "))
	}
	var out []Alert
	for _, a := range catalog {
		if severity == "" || a.Severity == severity {
			out = append(out, a)
		}
	}
	slices.SortStableFunc(out, func(a, b Alert) int {
		return slices.Index(severityOrder, a.Severity) - slices.Index(severityOrder, b.Severity)
	})
	return out, nil
}

// FormatText renders alerts as the tool's text content: a count line, then one line
// per alert, "- [severity] host: title (id, detected time)". Package fakeclaude
// parses this format (or the JSON of Output) to summarize a tool result.
func FormatText(alerts []Alert) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d security alert(s):\n", len(alerts))
	for _, a := range alerts {
		fmt.Fprintf(&b, "- [%s] %s: %s (%s, detected %s)\n", a.Severity, a.Host, a.Title, a.ID, a.DetectedAt.Format(time.RFC3339))
	}
	return b.String()
}

// scanSteps are reported as progress when the caller asked for it, so a client can
// tell the tool's own progress from the gateway's healing notices.
var scanSteps = []string{"querying sandfly for open alerts", "sorting alerts by severity"}

// newMCPServer builds a fresh SDK server: a new one per (re)start, so no session of a
// previous "process" survives.
func newMCPServer(onCall func()) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "sandfly-mcp-server", Version: "1.0.0"}, nil)
	mcp.AddTool(s, &mcp.Tool{
		Name:        ToolName,
		Title:       "Security alerts",
		Description: "List the open security alerts detected by sandfly on our hosts, most urgent first. Optionally filter by severity (critical, high, medium, low).",
	}, func(ctx context.Context, req *mcp.CallToolRequest, in Input) (*mcp.CallToolResult, Output, error) {
		onCall()
		if token := req.Params.GetProgressToken(); token != nil {
			for i, step := range scanSteps {
				// Progress is best effort: a client that went away must not fail the call.
				_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
					ProgressToken: token, Message: step,
					Progress: float64(i + 1), Total: float64(len(scanSteps)),
				})
			}
		}
		list, err := Alerts(in.Severity)
		if err != nil {
			// A tool failure goes to the model in the result, not as a protocol error.
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: err.Error()}}}, Output{}, nil //nolint:nilerr // see above
		}
		out := Output{Alerts: list, Count: len(list)}
		if out.Alerts == nil {
			out.Alerts = []Alert{}
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: FormatText(list)}}}, out, nil
	})
	return s
}

// ParseOutput decodes a tool result's structured content into Output.
func ParseOutput(structured any) (Output, error) {
	var out Output
	raw, err := json.Marshal(structured)
	if err != nil {
		return out, fmt.Errorf("encoding structured content: %w", err)
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return out, fmt.Errorf("decoding alerts: %w", err)
	}
	return out, nil
}
