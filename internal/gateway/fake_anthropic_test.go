package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/selfheal-dev/selfheal/internal/gateway"
	"github.com/selfheal-dev/selfheal/internal/gateway/anthropic"
	"github.com/selfheal-dev/selfheal/internal/sse"
)

const (
	canaryKey   = "sk-ant-canary-7f3e9b1c2d4a"
	clientToken = "gw-token-client-a-5e1d"
	testModel   = "claude-test-1"
)

// fakeAnthropic is a local Anthropic API: each request takes the next
// behaviour from its script (success when the script is used up) and is
// recorded.
type fakeAnthropic struct {
	t      testing.TB
	srv    *httptest.Server
	mu     sync.Mutex
	script []behaviour
	reqs   []recorded
}

type recorded struct {
	header http.Header
	body   []byte
}

type behaviour func(w http.ResponseWriter, r *http.Request)

func newFakeAnthropic(t testing.TB, script ...behaviour) *fakeAnthropic {
	f := &fakeAnthropic{t: t, script: script}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAnthropic) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, recorded{header: r.Header.Clone(), body: body})
	var b behaviour
	if len(f.script) > 0 {
		b, f.script = f.script[0], f.script[1:]
	}
	f.mu.Unlock()
	r.Header.Set("X-Fake-Body", string(body))
	if b == nil {
		b = okBehaviour
	}
	b(w, r)
}

func (f *fakeAnthropic) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

const messageJSON = `{"id":"msg_01","type":"message","role":"assistant","model":"claude-test-1","content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":2}}`

// okBehaviour answers a message, streamed when the request asked for it.
func okBehaviour(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("request-id", "req_fake_ok")
	if !strings.Contains(readRecordedBody(r), `"stream":true`) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, messageJSON)
		return
	}
	startStream(w)
	for _, ev := range streamPrelude {
		writeSSE(w, ev)
	}
	for _, ev := range streamContent {
		writeSSE(w, ev)
	}
}

// readRecordedBody returns the request body, which serve has read already.
func readRecordedBody(r *http.Request) string {
	return r.Header.Get("X-Fake-Body")
}

var streamPrelude = []string{
	"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-test-1\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":3,\"output_tokens\":0}}}\n\n",
	"event: ping\ndata: {\"type\":\"ping\"}\n\n",
}

var streamContent = []string{
	"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hel\"}}\n\n",
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
	"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
	"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2}}\n\n",
	"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
}

const overloadedEvent = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"

// startStream answers 200 with the event-stream headers; the fake then writes its
// frames byte for byte (half events included), so it does not use sse.Writer.
func startStream(w http.ResponseWriter) {
	sse.SetHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
}

func writeSSE(w http.ResponseWriter, ev string) {
	_, _ = io.WriteString(w, ev)
	_ = http.NewResponseController(w).Flush()
}

func errorStatus(code int, typ, msg string, headers ...string) behaviour {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("request-id", "req_fake_err")
		w.WriteHeader(code)
		_, _ = fmt.Fprintf(w, `{"type":"error","error":{"type":%q,"message":%q},"request_id":"req_fake_err"}`, typ, msg)
	}
}

func spendLimit429(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("request-id", "req_fake_spend")
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = io.WriteString(w, `{"type":"error","error":{"type":"rate_limit_error","message":"Your organization has reached its monthly spend limit.","details":{"error_code":"enforced_spend_limit_reached"}}}`)
}

// reset closes the connection with a TCP RST before any response.
func reset(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// slowFirstByte holds the response until d passes or the caller gives up.
func slowFirstByte(d time.Duration) behaviour {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(d):
			okBehaviour(w, r)
		case <-r.Context().Done():
		}
	}
}

func overloadedInStream(w http.ResponseWriter, _ *http.Request) {
	startStream(w)
	for _, ev := range streamPrelude {
		writeSSE(w, ev)
	}
	writeSSE(w, overloadedEvent)
}

// cutMidStream sends the first content and then drops the connection
// without ending the chunked body.
func cutMidStream(w http.ResponseWriter, _ *http.Request) {
	startStream(w)
	for _, ev := range streamPrelude {
		writeSSE(w, ev)
	}
	writeSSE(w, streamContent[0])
	writeSSE(w, streamContent[1])
	writeSSE(w, "event: content_block_delta\ndata: {\"type\":\"content_bl") // half an event
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	_ = conn.Close()
}

func errorAfterContent(w http.ResponseWriter, _ *http.Request) {
	startStream(w)
	for _, ev := range streamPrelude {
		writeSSE(w, ev)
	}
	writeSSE(w, streamContent[0])
	writeSSE(w, streamContent[1])
	writeSSE(w, overloadedEvent)
}

// autoClock is a fake clock whose timers fire at once: a retry wait of d
// steps the clock by d and is recorded, so tests assert the exact waits
// without sleeping through them.
type autoClock struct {
	*testingclock.FakeClock
	mu    sync.Mutex
	waits []time.Duration
}

func newAutoClock() *autoClock {
	return &autoClock{FakeClock: testingclock.NewFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))}
}

func (c *autoClock) NewTimer(d time.Duration) clock.Timer {
	t := c.FakeClock.NewTimer(d)
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	c.Step(d)
	return t
}

func (c *autoClock) recorded() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

type delayCall struct {
	upstream string
	attempt  int
	wait     time.Duration
	reason   string
}

type delayLog struct {
	mu    sync.Mutex
	calls []delayCall
}

func (d *delayLog) ProcessingDelay(upstream string, attempt int, wait time.Duration, reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, delayCall{upstream, attempt, wait, reason})
}

func (d *delayLog) all() []delayCall {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]delayCall(nil), d.calls...)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// debugLogger logs everything down to V(10) into buf.
func debugLogger(buf io.Writer) logr.Logger {
	return zap.New(zap.WriteTo(buf), zap.UseDevMode(true), zap.Level(zapcore.Level(-10)))
}

type gw struct {
	url    string
	clock  *autoClock
	delays *delayLog
	logs   *syncBuffer
	server *gateway.Server
	cancel context.CancelFunc
	done   chan error
}

type gwSetup struct {
	tokens  string // the tokens file, instead of one chat-a token
	yaml    string // replaces the default config body when set
	attempt string // anthropic.attemptTimeout
	opts    []gateway.Option
	// configure adds options made from the parsed config.
	configure func(*gateway.Config) []gateway.Option
}

// startGateway runs a gateway in front of upstream with the canary key
// injected from an env var and clientToken accepted.
func startGateway(t testing.TB, upstream string, s gwSetup) *gw {
	t.Helper()
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	content := "# clients\nchat-a:" + clientToken + "\n"
	if s.tokens != "" {
		content = s.tokens
	}
	if err := os.WriteFile(tokens, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	attempt := s.attempt
	if attempt == "" {
		attempt = "10s"
	}
	y := s.yaml
	if y == "" {
		y = fmt.Sprintf(`
anthropic:
  baseURL: %s
  apiKey: {env: TEST_ANTHROPIC_KEY}
  attemptTimeout: %s
auth:
  tokensFile: %s
`, upstream, attempt, tokens)
	} else {
		y = strings.ReplaceAll(strings.ReplaceAll(y, "UPSTREAM", upstream), "TOKENS", tokens)
	}
	cfg, err := gateway.ParseConfig([]byte(y), func(k string) string {
		if k == "TEST_ANTHROPIC_KEY" {
			return canaryKey
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	g := &gw{clock: newAutoClock(), delays: &delayLog{}, logs: &syncBuffer{}, done: make(chan error, 1)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := append([]gateway.Option{
		gateway.WithListener(ln),
		gateway.WithLogger(debugLogger(g.logs)),
		gateway.WithDelayReporter(g.delays),
		gateway.WithAnthropicOptions(func(o *anthropic.Options) {
			o.Clock = g.clock
			o.Rand = func() float64 { return 0.5 }
		}),
	}, s.opts...)
	if s.configure != nil {
		opts = append(opts, s.configure(cfg)...)
	}
	g.server, err = gateway.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	go func() { g.done <- g.server.Start(ctx) }()
	g.url = "http://" + ln.Addr().String()
	t.Cleanup(func() {
		cancel()
		if err := <-g.done; err != nil {
			t.Errorf("gateway stopped with error: %v", err)
		}
	})
	return g
}

// client is the official SDK pointed at the gateway with its own retries
// off, so every retry seen is the gateway's.
func (g *gw) client(opts ...option.RequestOption) *sdk.Client {
	c := sdk.NewClient(append([]option.RequestOption{
		option.WithBaseURL(g.url),
		option.WithAPIKey(clientToken),
		option.WithMaxRetries(0),
	}, opts...)...)
	return &c
}

func newParams() sdk.MessageNewParams {
	return sdk.MessageNewParams{
		Model:     testModel,
		MaxTokens: 16,
		Messages:  []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hi"))},
	}
}
