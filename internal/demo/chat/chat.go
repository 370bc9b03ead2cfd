// Package chat is the demo's chat backend: it answers a question with Claude and the
// tools of one MCP server, both reached THROUGH the selfheal gateway. It runs the
// tool loop (Claude -> tool_use -> MCP tools/call -> tool_result -> Claude ->
// answer) with the official Anthropic and MCP Go SDKs, surfaces the MCP progress and
// log notifications the gateway sends while it heals a call, and can follow the
// gateway's healing events stream.
package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Defaults of Client's fields.
const (
	DefaultModel     = anthropic.ModelClaudeHaiku4_5
	DefaultMaxTokens = 1024
	DefaultMaxTurns  = 4
)

// Client asks questions through the gateway. Set the fields, then call Ask (safe
// for concurrent use) and Close when done. Fields must not change after first use.
type Client struct {
	// GatewayURL is the gateway's base URL, e.g. http://127.0.0.1:8443.
	GatewayURL string
	// Token is the client's gateway bearer token. It is also the Anthropic SDK's key,
	// which SDK v2 sends as "Authorization: Bearer", so the gateway sees one token
	// on every route. Empty for a gateway with auth: none.
	Token string
	// AnthropicKey, when set, is sent as x-api-key for a gateway that passes the
	// client's key through to Anthropic.
	AnthropicKey string
	// Upstream is the gateway's name of the MCP server: {GatewayURL}/mcp/{Upstream}.
	Upstream string
	// Model, MaxTokens and MaxTurns (tool rounds) default to the constants above.
	Model     string
	MaxTokens int64
	MaxTurns  int
	// Stream uses the streaming Messages API.
	Stream bool
	// SDKRetries lets the Anthropic SDK retry on its own. Zero by default, so that
	// what a test sees is the gateway's retrying.
	SDKRetries int
	// MCPProtocolVersion is the MCP revision to speak: "2025-11-25" (sessions) or
	// "2026-07-28" (stateless); the SDK's latest when empty.
	MCPProtocolVersion string
	// HTTPClient carries every request; http.DefaultTransport when nil. The bearer
	// token is added to it, never logged.
	HTTPClient *http.Client

	// OnNotice receives the MCP notifications of tool calls in plain words: the
	// gateway's healing steps (notifications/progress, notifications/message) and
	// the tool's own progress.
	OnNotice func(string)
	// OnStep receives one line per step of the conversation (asked Claude, calling
	// a tool, ...).
	OnStep func(string)
	// OnEvent, when set, receives the gateway's healing events (filtered by
	// EventFilter) while Ask runs. To assert on events, prefer Events, which is
	// subscribed before the failure and outlives the answer.
	OnEvent     func(Event)
	EventFilter Filter

	mu       sync.Mutex
	session  *mcp.ClientSession
	tools    []*mcp.Tool
	progress atomic.Int64
}

// codeRejectedByTransport is the MCP SDK's JSON-RPC code for an HTTP failure of a
// call (its jsonrpc2.ErrRejected): the transport's error, not the server's answer.
const codeRejectedByTransport = -32005

// bearer adds the gateway token to every request.
type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.token != "" && r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.base.RoundTrip(r)
}

func (c *Client) httpClient() *http.Client {
	base := http.DefaultTransport
	out := &http.Client{}
	if c.HTTPClient != nil {
		*out = *c.HTTPClient
		if c.HTTPClient.Transport != nil {
			base = c.HTTPClient.Transport
		}
	}
	out.Transport = bearer{token: c.Token, base: base}
	return out
}

func (c *Client) notice(s string) {
	if c.OnNotice != nil {
		c.OnNotice(s)
	}
}

func (c *Client) step(format string, args ...any) {
	if c.OnStep != nil {
		c.OnStep(fmt.Sprintf(format, args...))
	}
}

// Connect opens the MCP session through the gateway and lists the tools; Ask does
// it when needed. Connecting before the MCP server fails lets a later tools/call
// show the gateway keeping the client's session across the server's restart.
func (c *Client) Connect(ctx context.Context) error {
	_, _, err := c.connect(ctx)
	return err
}

func (c *Client) connect(ctx context.Context) (*mcp.ClientSession, []*mcp.Tool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session != nil {
		return c.session, c.tools, nil
	}
	if c.GatewayURL == "" || c.Upstream == "" {
		return nil, nil, errors.New("chat client needs GatewayURL and Upstream")
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "selfheal-demo-chat", Version: "1.0.0"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			if r.Params.Message != "" {
				c.notice(r.Params.Message)
			} else {
				c.notice(fmt.Sprintf("progress %g/%g", r.Params.Progress, r.Params.Total))
			}
		},
		// The gateway reports healing to calls without a progress token as log messages;
		// logging stays functional through its deprecation window.
		LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) { //nolint:staticcheck // SA1019: see above
			if s, ok := r.Params.Data.(string); ok {
				c.notice(s)
				return
			}
			raw, _ := json.Marshal(r.Params.Data)
			c.notice(string(raw))
		},
	})
	endpoint := strings.TrimSuffix(c.GatewayURL, "/") + "/mcp/" + c.Upstream
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: endpoint, HTTPClient: c.httpClient(),
		// Server-initiated messages are not needed: notifications of a call come on
		// the call's own stream.
		DisableStandaloneSSE: true,
	}, &mcp.ClientSessionOptions{ProtocolVersion: c.MCPProtocolVersion})
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to MCP server %q through the gateway: %w", c.Upstream, err)
	}
	var tools []*mcp.Tool
	for tool, err := range session.Tools(ctx, nil) {
		if err != nil {
			_ = session.Close()
			return nil, nil, fmt.Errorf("listing the tools of %q: %w", c.Upstream, err)
		}
		tools = append(tools, tool)
	}
	c.session, c.tools = session, tools
	return session, tools, nil
}

// dropSession forgets a session that failed, so the next Ask connects again.
func (c *Client) dropSession(s *mcp.ClientSession) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session == s {
		_ = s.Close()
		c.session, c.tools = nil, nil
	}
}

// Close ends the MCP session.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session == nil {
		return nil
	}
	err := c.session.Close()
	c.session, c.tools = nil, nil
	return err
}

func (c *Client) anthropic() anthropic.Client {
	opts := []option.RequestOption{
		// Only what is set here: no ANTHROPIC_* variable of the environment leaks
		// into a request to the gateway.
		option.WithoutEnvironmentDefaults(),
		option.WithBaseURL(strings.TrimSuffix(c.GatewayURL, "/") + "/"),
		option.WithHTTPClient(c.httpClient()),
		option.WithMaxRetries(c.SDKRetries),
	}
	if c.Token != "" {
		opts = append(opts, option.WithAPIKey(c.Token))
	}
	if c.AnthropicKey != "" {
		opts = append(opts, option.WithHeader("x-api-key", c.AnthropicKey))
	}
	return anthropic.NewClient(opts...)
}

// Ask answers question: it asks Claude with the MCP server's tools, calls the tools
// Claude asks for (with a progress token, so healing notices arrive), and returns
// Claude's final text. A failed tool call (after the gateway gave up healing) is
// returned as an error carrying the gateway's diagnosis.
func (c *Client) Ask(ctx context.Context, question string) (string, error) {
	if c.OnEvent != nil {
		evCtx, stop := context.WithCancel(ctx)
		defer stop()
		events, err := c.Events(evCtx, c.EventFilter)
		if err != nil {
			return "", err
		}
		done := make(chan struct{})
		defer func() { stop(); <-done }()
		go func() {
			defer close(done)
			for ev := range events {
				c.OnEvent(ev)
			}
		}()
	}

	session, tools, err := c.connect(ctx)
	if err != nil {
		return "", err
	}
	claude := c.anthropic()
	params := anthropic.MessageNewParams{
		Model:     c.model(),
		MaxTokens: c.maxTokens(),
		Tools:     claudeTools(tools),
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(question))},
	}
	for turn := 0; turn < c.maxTurns(); turn++ {
		c.step("asking Claude (%d message(s), %d tool(s))", len(params.Messages), len(params.Tools))
		msg, err := c.create(ctx, claude, params)
		if err != nil {
			return "", fmt.Errorf("asking Claude through the gateway: %w", err)
		}
		params.Messages = append(params.Messages, msg.ToParam())
		if msg.StopReason != anthropic.StopReasonToolUse {
			return textOf(msg), nil
		}
		var results []anthropic.ContentBlockParamUnion
		for _, block := range msg.Content {
			if block.Type != "tool_use" {
				continue
			}
			use := block.AsToolUse()
			c.step("calling MCP tool %s on %s", use.Name, c.Upstream)
			text, isError, err := c.callTool(ctx, session, use)
			if err != nil {
				return "", err
			}
			c.step("tool %s answered (%d bytes)", use.Name, len(text))
			results = append(results, anthropic.NewToolResultBlock(use.ID, text, isError))
		}
		params.Messages = append(params.Messages, anthropic.NewUserMessage(results...))
	}
	return "", fmt.Errorf("no answer from Claude after %d tool rounds", c.maxTurns())
}

func (c *Client) callTool(ctx context.Context, session *mcp.ClientSession, use anthropic.ToolUseBlock) (string, bool, error) {
	args := use.Input
	if len(args) == 0 {
		args = json.RawMessage(`{}`)
	}
	params := &mcp.CallToolParams{Name: use.Name, Arguments: args}
	params.SetProgressToken(fmt.Sprintf("chat-%d", c.progress.Add(1)))
	res, err := session.CallTool(ctx, params)
	if err != nil {
		// A JSON-RPC error is the server's (or the gateway's) answer: the session is
		// fine. Anything else broke the transport or lost the session: start over
		// on the next Ask.
		var rpcErr *jsonrpc.Error
		if !errors.As(err, &rpcErr) || rpcErr.Code == codeRejectedByTransport {
			c.dropSession(session)
		}
		return "", false, fmt.Errorf("calling MCP tool %s on %q through the gateway: %w", use.Name, c.Upstream, err)
	}
	var parts []string
	for _, content := range res.Content {
		if t, ok := content.(*mcp.TextContent); ok {
			parts = append(parts, t.Text)
		}
	}
	if len(parts) == 0 && res.StructuredContent != nil {
		raw, _ := json.Marshal(res.StructuredContent)
		parts = append(parts, string(raw))
	}
	return strings.Join(parts, "\n"), res.IsError, nil
}

func (c *Client) create(ctx context.Context, claude anthropic.Client, params anthropic.MessageNewParams) (*anthropic.Message, error) {
	if !c.Stream {
		return claude.Messages.New(ctx, params)
	}
	stream := claude.Messages.NewStreaming(ctx, params)
	defer func() { _ = stream.Close() }()
	var msg anthropic.Message
	for stream.Next() {
		if err := msg.Accumulate(stream.Current()); err != nil {
			return nil, fmt.Errorf("reading the stream: %w", err)
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return &msg, nil
}

func (c *Client) model() string {
	if c.Model != "" {
		return c.Model
	}
	return DefaultModel
}

func (c *Client) maxTokens() int64 {
	if c.MaxTokens > 0 {
		return c.MaxTokens
	}
	return DefaultMaxTokens
}

func (c *Client) maxTurns() int {
	if c.MaxTurns > 0 {
		return c.MaxTurns
	}
	return DefaultMaxTurns
}

func textOf(msg *anthropic.Message) string {
	var parts []string
	for _, b := range msg.Content {
		if b.Type == "text" {
			parts = append(parts, b.Text)
		}
	}
	return strings.Join(parts, "")
}

// claudeTools turns MCP tool definitions into Claude tool definitions.
func claudeTools(tools []*mcp.Tool) []anthropic.ToolUnionParam {
	out := make([]anthropic.ToolUnionParam, 0, len(tools))
	for _, t := range tools {
		var schema map[string]any
		raw, _ := json.Marshal(t.InputSchema)
		_ = json.Unmarshal(raw, &schema)
		in := anthropic.ToolInputSchemaParam{Properties: schema["properties"], ExtraFields: map[string]any{}}
		if req, ok := schema["required"].([]any); ok {
			for _, r := range req {
				if s, ok := r.(string); ok {
					in.Required = append(in.Required, s)
				}
			}
		}
		for k, v := range schema {
			switch k {
			case "type", "properties", "required", "$schema":
			default:
				in.ExtraFields[k] = v
			}
		}
		tool := &anthropic.ToolParam{Name: t.Name, InputSchema: in}
		if t.Description != "" {
			tool.Description = anthropic.String(t.Description)
		}
		out = append(out, anthropic.ToolUnionParam{OfTool: tool})
	}
	return out
}
