package fakeclaude_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	. "github.com/onsi/gomega"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/selfheal-dev/selfheal/internal/demo/alerts"
	"github.com/selfheal-dev/selfheal/internal/demo/fakeclaude"
)

const key = "sk-ant-test-key"

func start(t *testing.T, opts fakeclaude.Options) *fakeclaude.Server {
	t.Helper()
	s, err := fakeclaude.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func sdk(s *fakeclaude.Server) anthropic.Client {
	return anthropic.NewClient(option.WithoutEnvironmentDefaults(), option.WithBaseURL(s.URL()),
		option.WithAPIKey(key), option.WithMaxRetries(0))
}

var alertsTool = anthropic.ToolUnionParam{OfTool: &anthropic.ToolParam{
	Name:        alerts.ToolName,
	InputSchema: anthropic.ToolInputSchemaParam{Properties: map[string]any{"severity": map[string]any{"type": "string"}}},
}}

func question(q string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model: "claude-sonnet-4-5", MaxTokens: 1024, Tools: []anthropic.ToolUnionParam{alertsTool},
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(q))},
	}
}

func withResult(p anthropic.MessageNewParams, m *anthropic.Message, result string, isError bool) anthropic.MessageNewParams {
	p.Messages = append(p.Messages, m.ToParam())
	for _, b := range m.Content {
		if b.Type == "tool_use" {
			p.Messages = append(p.Messages, anthropic.NewUserMessage(anthropic.NewToolResultBlock(b.ID, result, isError)))
		}
	}
	return p
}

func toolUse(m *anthropic.Message) (anthropic.ToolUseBlock, bool) {
	for _, b := range m.Content {
		if b.Type == "tool_use" {
			return b.AsToolUse(), true
		}
	}
	return anthropic.ToolUseBlock{}, false
}

func text(m *anthropic.Message) string {
	var out []string
	for _, b := range m.Content {
		if b.Type == "text" {
			out = append(out, b.Text)
		}
	}
	return strings.Join(out, "")
}

// streamed runs a streaming request and accumulates it, as a streaming client does.
func streamed(ctx context.Context, c anthropic.Client, p anthropic.MessageNewParams) (*anthropic.Message, []string, error) {
	stream := c.Messages.NewStreaming(ctx, p)
	defer stream.Close()
	var m anthropic.Message
	var types []string
	for stream.Next() {
		ev := stream.Current()
		types = append(types, ev.Type)
		if err := m.Accumulate(ev); err != nil {
			return &m, types, err
		}
	}
	return &m, types, stream.Err()
}

func TestToolConversation(t *testing.T) {
	for _, stream := range []bool{false, true} {
		name := map[bool]string{false: "json", true: "stream"}[stream]
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			s := start(t, fakeclaude.Options{APIKey: key})
			c := sdk(s)
			call := func(p anthropic.MessageNewParams) *anthropic.Message {
				if stream {
					m, types, err := streamed(ctx, c, p)
					g.Expect(err).NotTo(HaveOccurred())
					g.Expect(types[:3]).To(Equal([]string{"message_start", "content_block_start", "content_block_delta"}))
					g.Expect(types[len(types)-2:]).To(Equal([]string{"message_delta", "message_stop"}))
					return m
				}
				m, err := c.Messages.New(ctx, p)
				g.Expect(err).NotTo(HaveOccurred())
				return m
			}

			p := question("What security alerts do we have?")
			first := call(p)
			g.Expect(first.StopReason).To(Equal(anthropic.StopReasonToolUse))
			use, ok := toolUse(first)
			g.Expect(ok).To(BeTrue())
			g.Expect(use.Name).To(Equal(alerts.ToolName))
			g.Expect(string(use.Input)).To(MatchJSON(`{}`))
			g.Expect(use.ID).To(HavePrefix("toolu_01"))

			list, _ := alerts.Alerts("")
			second := call(withResult(p, first, alerts.FormatText(list), false))
			g.Expect(second.StopReason).To(Equal(anthropic.StopReasonEndTurn))
			answer := text(second)
			g.Expect(answer).To(HavePrefix("You have 5 open security alert(s): 1 critical, 2 high, 1 medium, 1 low."))
			g.Expect(answer).To(ContainSubstring("Most urgent: sf-1041 on web-prod-03 (critical)"))

			// The answer follows the tool's output, not a script.
			high, _ := alerts.Alerts("high")
			p2 := question("Any high severity alerts?")
			first2 := call(p2)
			use2, _ := toolUse(first2)
			g.Expect(string(use2.Input)).To(MatchJSON(`{"severity":"high"}`))
			g.Expect(text(call(withResult(p2, first2, alerts.FormatText(high), false)))).To(HavePrefix("You have 2 open security alert(s): 2 high."))
			g.Expect(text(call(withResult(p2, first2, "sandfly API unreachable", true)))).
				To(Equal("I could not get the security alerts: sandfly API unreachable"))

			reqs := s.Requests()
			g.Expect(reqs).To(HaveLen(5))
			g.Expect(reqs[0]).To(And(HaveField("Outcome", "tool_use"), HaveField("Auth", "bearer"), HaveField("Stream", stream), HaveField("Messages", 1)))
			g.Expect(reqs[1]).To(And(HaveField("Outcome", "end_turn"), HaveField("Status", 200), HaveField("Messages", 3)))
		})
	}
}

func TestStreamingAndJSONAgree(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	c := sdk(start(t, fakeclaude.Options{}))
	p := question("Show me the critical alerts")
	plain, err := c.Messages.New(ctx, p)
	g.Expect(err).NotTo(HaveOccurred())
	acc, _, err := streamed(ctx, c, p)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(acc.StopReason).To(Equal(plain.StopReason))
	g.Expect(acc.Content).To(HaveLen(len(plain.Content)))
	g.Expect(text(acc)).To(Equal(text(plain)))
	u1, _ := toolUse(plain)
	u2, _ := toolUse(acc)
	g.Expect(u2.ID).To(Equal(u1.ID))
	g.Expect(string(u2.Input)).To(MatchJSON(u1.Input))
	g.Expect(string(u1.Input)).To(MatchJSON(`{"severity":"critical"}`))
}

// rawPost sends a request without an SDK, to check validation.
func rawPost(t *testing.T, s *fakeclaude.Server, header map[string]string, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/v1/messages", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(res.Body)
	_ = json.Unmarshal(raw, &out)
	return res.StatusCode, out
}

func TestValidation(t *testing.T) {
	s := start(t, fakeclaude.Options{APIKey: key})
	good := map[string]string{"x-api-key": key, "anthropic-version": "2023-06-01"}
	body := `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	for _, tc := range []struct {
		name    string
		header  map[string]string
		body    string
		status  int
		errType string
		message string
	}{
		{"ok", good, body, 200, "", ""},
		{"no key", map[string]string{"anthropic-version": "2023-06-01"}, body, 401, "authentication_error", "x-api-key header is required"},
		{"wrong key", map[string]string{"x-api-key": "other", "anthropic-version": "2023-06-01"}, body, 401, "authentication_error", "invalid x-api-key"},
		{"no version", map[string]string{"x-api-key": key}, body, 400, "invalid_request_error", "anthropic-version: header is required"},
		{"bad json", good, `{"model":`, 400, "invalid_request_error", "There was an error parsing the body of your request"},
		{"no model", good, `{"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "model: Field required"},
		{"no max_tokens", good, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "max_tokens: Field required"},
		{"no messages", good, `{"model":"m","max_tokens":10}`, 400, "invalid_request_error", "messages: Field required"},
		{"bad role", good, `{"model":"m","max_tokens":10,"messages":[{"role":"system","content":"hi"}]}`, 400, "invalid_request_error", "messages.0.role: Input should be 'user' or 'assistant'"},
		{"orphan tool_result", good, `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_x","content":"r"}]}]}`,
			400, "invalid_request_error", "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_x"},
		{"tool_use without result", good, `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"q"},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_y","name":"t","input":{}}]},{"role":"user","content":"no result"}]}`,
			400, "invalid_request_error", "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			status, out := rawPost(t, s, tc.header, tc.body)
			g.Expect(status).To(Equal(tc.status))
			if tc.status == 200 {
				g.Expect(out).To(HaveKeyWithValue("type", "message"))
				return
			}
			g.Expect(out).To(HaveKeyWithValue("type", "error"))
			g.Expect(out).To(HaveKeyWithValue("request_id", HavePrefix("req_")))
			g.Expect(out["error"]).To(And(HaveKeyWithValue("type", tc.errType), HaveKeyWithValue("message", HavePrefix(tc.message))))
		})
	}
}

func TestFaultsApplyInOrder(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	s := start(t, fakeclaude.Options{})
	c := sdk(s)
	s.Inject(fakeclaude.Fault529, fakeclaude.Fault429RetryAfter(1500*time.Millisecond), fakeclaude.FaultSpendLimit429,
		fakeclaude.Fault500.WithHeader("x-should-retry", "false"))
	g.Expect(s.PendingFaults()).To(Equal(4))

	var apiErr *anthropic.Error
	_, err := c.Messages.New(ctx, question("q"))
	g.Expect(errors.As(err, &apiErr)).To(BeTrue())
	g.Expect(apiErr.StatusCode).To(Equal(529))
	g.Expect(apiErr.RawJSON()).To(ContainSubstring(`"overloaded_error"`))

	_, err = c.Messages.New(ctx, question("q"))
	g.Expect(errors.As(err, &apiErr)).To(BeTrue())
	g.Expect(apiErr.StatusCode).To(Equal(429))
	g.Expect(apiErr.Response.Header.Get("retry-after")).To(Equal("2"))
	g.Expect(apiErr.Response.Header.Get("retry-after-ms")).To(Equal("1500"))

	_, err = c.Messages.New(ctx, question("q"))
	g.Expect(errors.As(err, &apiErr)).To(BeTrue())
	g.Expect(apiErr.StatusCode).To(Equal(429))
	g.Expect(apiErr.RawJSON()).To(ContainSubstring(`"error_code":"enforced_spend_limit_reached"`))

	_, err = c.Messages.New(ctx, question("q"))
	g.Expect(errors.As(err, &apiErr)).To(BeTrue())
	g.Expect(apiErr.StatusCode).To(Equal(500))
	g.Expect(apiErr.Response.Header.Get("x-should-retry")).To(Equal("false"))

	_, err = c.Messages.New(ctx, question("q"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(s.PendingFaults()).To(BeZero())

	var statuses []int
	for _, r := range s.Requests() {
		statuses = append(statuses, r.Status)
	}
	g.Expect(statuses).To(Equal([]int{529, 429, 429, 500, 200}))
	g.Expect(s.Requests()[0].Fault).To(Equal("529-overloaded"))
}

func TestStreamFaults(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	s := start(t, fakeclaude.Options{})
	c := sdk(s)

	s.Inject(fakeclaude.FaultOverloadedInBand)
	m, types, err := streamed(ctx, c, question("q"))
	g.Expect(err).To(MatchError(ContainSubstring("Overloaded")))
	g.Expect(types).To(Equal([]string{"message_start"}))
	g.Expect(m.Content).To(BeEmpty())

	s.Inject(fakeclaude.FaultMidStreamCut)
	_, types, err = streamed(ctx, c, question("q"))
	g.Expect(err).To(HaveOccurred())
	g.Expect(types).To(ContainElement("content_block_delta"))
	g.Expect(types).NotTo(ContainElement("message_stop"))

	s.Inject(fakeclaude.FaultConnReset)
	_, err = c.Messages.New(ctx, question("q"))
	g.Expect(err).To(HaveOccurred())
	var apiErr *anthropic.Error
	g.Expect(errors.As(err, &apiErr)).To(BeFalse(), "a reset is a transport error, not an API answer")

	// A non-streaming request with an in-band fault gets the 529 the API would send.
	s.Inject(fakeclaude.FaultOverloadedInBand)
	_, err = c.Messages.New(ctx, question("q"))
	g.Expect(errors.As(err, &apiErr)).To(BeTrue())
	g.Expect(apiErr.StatusCode).To(Equal(529))

	outcomes := []string{}
	for _, r := range s.Requests() {
		outcomes = append(outcomes, r.Outcome)
	}
	g.Expect(outcomes).To(Equal([]string{"overloaded_error", "cut", "reset", "overloaded_error"}))
}

func TestSlowFirstByteWaitsForTheClock(t *testing.T) {
	g := NewWithT(t)
	clk := clocktesting.NewFakeClock(time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC))
	s := start(t, fakeclaude.Options{Clock: clk})
	c := sdk(s)
	s.Inject(fakeclaude.FaultSlowFirstByte(30 * time.Second))
	done := make(chan error, 1)
	go func() { _, err := c.Messages.New(context.Background(), question("q")); done <- err }()
	g.Eventually(clk.HasWaiters).Should(BeTrue())
	g.Consistently(done).ShouldNot(Receive())
	clk.Step(30 * time.Second)
	g.Eventually(done).Should(Receive(BeNil()))
}

func TestModelsAndUnknownPaths(t *testing.T) {
	g := NewWithT(t)
	s := start(t, fakeclaude.Options{})
	c := sdk(s)
	page, err := c.Models.List(context.Background(), anthropic.ModelListParams{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(page.Data).To(HaveLen(1))
	g.Expect(page.Data[0].ID).To(Equal(fakeclaude.Model))
	res, err := http.Get(s.URL() + "/v1/nothing")
	g.Expect(err).NotTo(HaveOccurred())
	res.Body.Close()
	g.Expect(res.StatusCode).To(Equal(http.StatusNotFound))
}
