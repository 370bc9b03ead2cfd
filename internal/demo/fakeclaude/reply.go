package fakeclaude

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/selfheal-dev/selfheal/internal/demo/alerts"
)

// The request body, as far as the fake reads it.
type messagesRequest struct {
	Model     string          `json:"model"`
	MaxTokens *int64          `json:"max_tokens"`
	Messages  []inMessage     `json:"messages"`
	Tools     []inTool        `json:"tools"`
	Stream    bool            `json:"stream"`
	System    json.RawMessage `json:"system"`
}

type inMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type inTool struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

type inBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
}

// blocks decodes a message's content: a string is one text block.
func (m inMessage) blocks() ([]inBlock, error) {
	var s string
	if err := json.Unmarshal(m.Content, &s); err == nil {
		return []inBlock{{Type: "text", Text: s}}, nil
	}
	var bs []inBlock
	if err := json.Unmarshal(m.Content, &bs); err != nil {
		return nil, fmt.Errorf("content: Input should be a valid string or list of content blocks")
	}
	return bs, nil
}

// text of a tool_result's content: a string, or the text blocks of a list.
func (b inBlock) resultText() string {
	var s string
	if err := json.Unmarshal(b.Content, &s); err == nil {
		return s
	}
	var parts []inBlock
	_ = json.Unmarshal(b.Content, &parts)
	var out []string
	for _, p := range parts {
		if p.Type == "text" {
			out = append(out, p.Text)
		}
	}
	return strings.Join(out, "\n")
}

// outBlock is one content block of the answer.
type outBlock struct {
	Type  string          `json:"type"`
	Text  string          `json:"text,omitempty"`
	ID    string          `json:"id,omitempty"`
	Name  string          `json:"name,omitempty"`
	Input json.RawMessage `json:"input,omitempty"`
}

// validate checks the body as the API does, with its error messages.
func (r *messagesRequest) validate() error {
	switch {
	case r.Model == "":
		return fmt.Errorf("model: Field required")
	case r.MaxTokens == nil:
		return fmt.Errorf("max_tokens: Field required")
	case *r.MaxTokens < 1:
		return fmt.Errorf("max_tokens: Input should be greater than or equal to 1")
	case r.Messages == nil:
		return fmt.Errorf("messages: Field required")
	case len(r.Messages) == 0:
		return fmt.Errorf("messages: at least one message is required")
	}
	pendingToolUses := map[string]bool{}
	for i, m := range r.Messages {
		if m.Role != "user" && m.Role != "assistant" {
			return fmt.Errorf("messages.%d.role: Input should be 'user' or 'assistant'", i)
		}
		bs, err := m.blocks()
		if err != nil {
			return fmt.Errorf("messages.%d.%w", i, err)
		}
		if m.Role == "user" {
			for j, b := range bs {
				if b.Type != "tool_result" {
					continue
				}
				if !pendingToolUses[b.ToolUseID] {
					//nolint:staticcheck // ST1005: copies the API's exact message
					return fmt.Errorf("messages.%d.content.%d: unexpected `tool_use_id` found in `tool_result` blocks: %s. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.", i, j, b.ToolUseID)
				}
				delete(pendingToolUses, b.ToolUseID)
			}
		}
		if len(pendingToolUses) > 0 {
			//nolint:staticcheck // ST1005: copies the API's exact message
			return fmt.Errorf("messages.%d: `tool_use` ids were found without `tool_result` blocks immediately after: %s. Each `tool_use` block must have a corresponding `tool_result` block in the next message.", i-1, strings.Join(sortedKeys(pendingToolUses), ", "))
		}
		if m.Role == "assistant" {
			for _, b := range bs {
				if b.Type == "tool_use" {
					pendingToolUses[b.ID] = true
				}
			}
		}
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// reply is the deterministic model: a question with the alerts tool available gets a
// tool_use; a tool_result gets an answer built from its content; anything else gets
// a short text. The same conversation always gets the same reply.
func reply(r *messagesRequest) (blocks []outBlock, stopReason string) {
	last := r.Messages[len(r.Messages)-1]
	bs, _ := last.blocks()
	if last.Role != "user" {
		return []outBlock{{Type: "text", Text: "."}}, "end_turn"
	}
	var results []inBlock
	var question []string
	for _, b := range bs {
		switch b.Type {
		case "tool_result":
			results = append(results, b)
		case "text":
			question = append(question, b.Text)
		}
	}
	if len(results) > 0 {
		var answers []string
		for _, res := range results {
			answers = append(answers, summarize(res))
		}
		return []outBlock{{Type: "text", Text: strings.Join(answers, "\n\n")}}, "end_turn"
	}
	q := strings.Join(question, "\n")
	if slices.ContainsFunc(r.Tools, func(t inTool) bool { return t.Name == alerts.ToolName }) {
		input := map[string]string{}
		if sev := severityIn(q); sev != "" {
			input["severity"] = sev
		}
		raw, _ := json.Marshal(input)
		sum := sha256.Sum256([]byte(q))
		return []outBlock{
			{Type: "text", Text: "I'll check the open security alerts."},
			{Type: "tool_use", ID: "toolu_01" + hex.EncodeToString(sum[:11]), Name: alerts.ToolName, Input: raw},
		}, "tool_use"
	}
	return []outBlock{{Type: "text", Text: "I can tell you about our security alerts once the " + alerts.ToolName + " tool is available."}}, "end_turn"
}

var severityWord = regexp.MustCompile(`(?i)\b(critical|high|medium|low)\b`)

func severityIn(q string) string {
	return strings.ToLower(severityWord.FindString(q))
}

// alertLine matches alerts.FormatText's lines.
var alertLine = regexp.MustCompile(`^- \[(\w+)\] ([^:]+): (.+) \(([^,]+), detected ([^)]+)\)$`)

// summarize answers from one tool_result: its alerts (from JSON of alerts.Output or
// from alerts.FormatText lines), or its error.
func summarize(res inBlock) string {
	text := res.resultText()
	if res.IsError {
		return "I could not get the security alerts: " + strings.TrimSpace(text)
	}
	var list []alerts.Alert
	var out alerts.Output
	if err := json.Unmarshal([]byte(text), &out); err == nil && out.Alerts != nil {
		list = out.Alerts
	} else {
		parsed := false
		for _, line := range strings.Split(text, "\n") {
			m := alertLine.FindStringSubmatch(strings.TrimSpace(line))
			if m == nil {
				if strings.HasSuffix(strings.TrimSpace(line), "security alert(s):") {
					parsed = true
				}
				continue
			}
			parsed = true
			list = append(list, alerts.Alert{Severity: m[1], Host: m[2], Title: m[3], ID: m[4]})
		}
		if !parsed {
			return "The security alerts tool returned: " + strings.TrimSpace(text)
		}
	}
	if len(list) == 0 {
		return "There are no open security alerts."
	}
	counts := map[string]int{}
	for _, a := range list {
		counts[a.Severity]++
	}
	var parts []string
	for _, s := range []string{alerts.SeverityCritical, alerts.SeverityHigh, alerts.SeverityMedium, alerts.SeverityLow} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "You have %d open security alert(s): %s.\n", len(list), strings.Join(parts, ", "))
	top := list[0]
	fmt.Fprintf(&b, "Most urgent: %s on %s (%s): %s.\n", top.ID, top.Host, top.Severity, top.Title)
	for _, a := range list[1:] {
		fmt.Fprintf(&b, "- %s on %s (%s): %s\n", a.ID, a.Host, a.Severity, a.Title)
	}
	return strings.TrimSpace(b.String())
}
