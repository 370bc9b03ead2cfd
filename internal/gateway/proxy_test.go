package gateway_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
)

func TestMessagesRetriesHonourRetryAfterThenSucceed(t *testing.T) {
	up := newFakeAnthropic(t,
		errorStatus(429, "rate_limit_error", "slow down", "retry-after", "3"),
		errorStatus(529, "overloaded_error", "Overloaded"),
	)
	g := startGateway(t, up.srv.URL, gwSetup{})
	c := g.client()

	msg, err := c.Messages.New(context.Background(), newParams())
	if err != nil {
		t.Fatalf("Messages.New: %v", err)
	}
	if len(msg.Content) != 1 || msg.Content[0].Text != "hello" {
		t.Fatalf("unexpected message: %+v", msg.Content)
	}
	reqs := up.requests()
	if len(reqs) != 3 {
		t.Fatalf("upstream saw %d requests, want 3", len(reqs))
	}
	// retry-after: 3 first; then full jitter with rand=0.5 at attempt 2:
	// 0.5 * 500ms * 2^1.
	if got, want := g.clock.recorded(), []time.Duration{3 * time.Second, 500 * time.Millisecond}; !slices.Equal(got, want) {
		t.Fatalf("waits = %v, want %v", got, want)
	}
	want := []delayCall{{"anthropic", 1, 3 * time.Second, "rate_limited"}, {"anthropic", 2, 500 * time.Millisecond, "overloaded"}}
	if got := g.delays.all(); !slices.Equal(got, want) {
		t.Fatalf("processing delays = %+v, want %+v", got, want)
	}
	for i, r := range reqs {
		if r.header.Get("X-Api-Key") != canaryKey {
			t.Errorf("request %d: x-api-key is not the injected key", i)
		}
		if r.header.Get("Authorization") != "" || r.header.Get("X-Selfheal-Token") != "" {
			t.Errorf("request %d: the client's gateway token was forwarded", i)
		}
		if r.header.Get("Anthropic-Version") == "" {
			t.Errorf("request %d: anthropic-version header not forwarded", i)
		}
	}
}

func TestMessagesRetryRules(t *testing.T) {
	date := func(d time.Duration) string {
		return newAutoClock().Now().Add(d).UTC().Format(http.TimeFormat)
	}
	cases := []struct {
		name     string
		script   []behaviour
		attempt  string
		wantReqs int
		// wantStatus 0: success
		wantStatus int
		wantType   string
		wantWaits  []time.Duration
	}{
		{name: "500 then success", script: []behaviour{errorStatus(500, "api_error", "boom")}, wantReqs: 2,
			wantWaits: []time.Duration{250 * time.Millisecond}},
		{name: "connection reset then success", script: []behaviour{reset}, wantReqs: 2,
			wantWaits: []time.Duration{250 * time.Millisecond}},
		{name: "slow first byte then success", script: []behaviour{slowFirstByte(5 * time.Second)}, attempt: "200ms", wantReqs: 2,
			wantWaits: []time.Duration{250 * time.Millisecond}},
		{name: "408 and 409 are retried", script: []behaviour{errorStatus(408, "api_error", "t"), errorStatus(409, "api_error", "c")}, wantReqs: 3,
			wantWaits: []time.Duration{250 * time.Millisecond, 500 * time.Millisecond}},
		{name: "retry-after-ms wins over retry-after", script: []behaviour{errorStatus(429, "rate_limit_error", "x", "retry-after-ms", "1500", "retry-after", "7")}, wantReqs: 2,
			wantWaits: []time.Duration{1500 * time.Millisecond}},
		{name: "retry-after as HTTP date", script: []behaviour{errorStatus(503, "api_error", "x", "retry-after", date(4*time.Second))}, wantReqs: 2,
			wantWaits: []time.Duration{4 * time.Second}},
		{name: "400 is not retried", script: []behaviour{errorStatus(400, "invalid_request_error", "bad")}, wantReqs: 1,
			wantStatus: 400, wantType: "invalid_request_error"},
		{name: "spend-limit 429 is not retried", script: []behaviour{spendLimit429}, wantReqs: 1,
			wantStatus: 429, wantType: "rate_limit_error"},
		{name: "x-should-retry false beats 529", script: []behaviour{errorStatus(529, "overloaded_error", "o", "x-should-retry", "false")}, wantReqs: 1,
			wantStatus: 529, wantType: "overloaded_error"},
		{name: "x-should-retry true beats 400", script: []behaviour{errorStatus(400, "invalid_request_error", "o", "x-should-retry", "true")}, wantReqs: 2,
			wantWaits: []time.Duration{250 * time.Millisecond}},
		{name: "retry-after beyond the budget gives up with the response", script: []behaviour{errorStatus(429, "rate_limit_error", "x", "retry-after", "300")}, wantReqs: 1,
			wantStatus: 429, wantType: "rate_limit_error"},
		{name: "retries exhausted return the last response", script: []behaviour{
			errorStatus(503, "api_error", "a"), errorStatus(503, "api_error", "b"), errorStatus(529, "overloaded_error", "c")}, wantReqs: 3,
			wantStatus: 529, wantType: "overloaded_error", wantWaits: []time.Duration{250 * time.Millisecond, 500 * time.Millisecond}},
		{name: "unreachable after retries is a 502 api_error", script: []behaviour{reset, reset, reset}, wantReqs: 3,
			wantStatus: 502, wantType: "api_error", wantWaits: []time.Duration{250 * time.Millisecond, 500 * time.Millisecond}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := newFakeAnthropic(t, tc.script...)
			g := startGateway(t, up.srv.URL, gwSetup{attempt: tc.attempt})
			msg, err := g.client().Messages.New(context.Background(), newParams())
			if n := len(up.requests()); n != tc.wantReqs {
				t.Errorf("upstream saw %d requests, want %d", n, tc.wantReqs)
			}
			if got := g.clock.recorded(); !slices.Equal(got, tc.wantWaits) {
				t.Errorf("waits = %v, want %v", got, tc.wantWaits)
			}
			if tc.wantStatus == 0 {
				if err != nil {
					t.Fatalf("Messages.New: %v", err)
				}
				if msg.Content[0].Text != "hello" {
					t.Fatalf("text = %q", msg.Content[0].Text)
				}
				return
			}
			var apiErr *sdk.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("want an API error, got %v", err)
			}
			if apiErr.StatusCode != tc.wantStatus || string(apiErr.Type()) != tc.wantType {
				t.Fatalf("got %d %q, want %d %q", apiErr.StatusCode, apiErr.Type(), tc.wantStatus, tc.wantType)
			}
			// Upstream answers keep their request-id; the gateway's own 502 has none.
			if fromUpstream := tc.wantStatus != 502; fromUpstream != (apiErr.RequestID != "") {
				t.Fatalf("request-id %q for a %d", apiErr.RequestID, tc.wantStatus)
			}
		})
	}
}

func streamText(t *testing.T, g *gw) (string, error) {
	t.Helper()
	s := g.client().Messages.NewStreaming(context.Background(), newParams())
	defer func() { _ = s.Close() }()
	var acc sdk.Message
	for s.Next() {
		if err := acc.Accumulate(s.Current()); err != nil {
			t.Fatalf("accumulate: %v", err)
		}
	}
	text := ""
	for _, b := range acc.Content {
		text += b.Text
	}
	return text, s.Err()
}

func TestStreaming(t *testing.T) {
	cases := []struct {
		name      string
		script    []behaviour
		attempt   string
		wantReqs  int
		wantText  string
		wantErr   string // API error type in-band, "" for success
		wantWaits []time.Duration
	}{
		{name: "plain stream", wantReqs: 1, wantText: "hello"},
		{name: "overloaded_error before content is retried", script: []behaviour{overloadedInStream}, wantReqs: 2, wantText: "hello",
			wantWaits: []time.Duration{250 * time.Millisecond}},
		{name: "529 before the stream is retried", script: []behaviour{errorStatus(529, "overloaded_error", "o")}, wantReqs: 2, wantText: "hello",
			wantWaits: []time.Duration{250 * time.Millisecond}},
		{name: "slow first byte is retried", script: []behaviour{slowFirstByte(5 * time.Second)}, attempt: "200ms", wantReqs: 2, wantText: "hello",
			wantWaits: []time.Duration{250 * time.Millisecond}},
		{name: "long wait keeps the client alive and then streams", script: []behaviour{errorStatus(429, "rate_limit_error", "x", "retry-after", "2")}, wantReqs: 2, wantText: "hello",
			wantWaits: []time.Duration{2 * time.Second}},
		{name: "failure after keepalive is an in-band error", script: []behaviour{
			errorStatus(429, "rate_limit_error", "x", "retry-after", "2"), errorStatus(400, "invalid_request_error", "bad")},
			wantReqs: 2, wantErr: "invalid_request_error", wantWaits: []time.Duration{2 * time.Second}},
		{name: "overloaded_error after content is passed through", script: []behaviour{errorAfterContent}, wantReqs: 1, wantText: "hel",
			wantErr: "overloaded_error"},
		{name: "mid-stream cut is reported, never truncated silently", script: []behaviour{cutMidStream}, wantReqs: 1, wantText: "hel",
			wantErr: "api_error"},
		{name: "overloaded on every attempt ends with the error", script: []behaviour{overloadedInStream, overloadedInStream, overloadedInStream}, wantReqs: 3,
			wantErr: "overloaded_error", wantWaits: []time.Duration{250 * time.Millisecond, 500 * time.Millisecond}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := newFakeAnthropic(t, tc.script...)
			g := startGateway(t, up.srv.URL, gwSetup{attempt: tc.attempt})
			text, err := streamText(t, g)
			if n := len(up.requests()); n != tc.wantReqs {
				t.Errorf("upstream saw %d requests, want %d", n, tc.wantReqs)
			}
			if got := g.clock.recorded(); !slices.Equal(got, tc.wantWaits) {
				t.Errorf("waits = %v, want %v", got, tc.wantWaits)
			}
			if text != tc.wantText {
				t.Errorf("text = %q, want %q", text, tc.wantText)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("stream error: %v", err)
				}
				return
			}
			var apiErr *sdk.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("want an in-band API error, got %v", err)
			}
			if string(apiErr.Type()) != tc.wantErr {
				t.Fatalf("error type %q, want %q (%v)", apiErr.Type(), tc.wantErr, err)
			}
		})
	}
}

// TestStreamKeepaliveOnTheWire reads the raw SSE: during a long retry wait
// the client already has 200 text/event-stream and a keepalive comment,
// then the upstream's events follow.
func TestStreamKeepaliveOnTheWire(t *testing.T) {
	up := newFakeAnthropic(t, errorStatus(529, "overloaded_error", "o", "retry-after", "5"))
	g := startGateway(t, up.srv.URL, gwSetup{})
	req, _ := http.NewRequest(http.MethodPost, g.url+"/v1/messages",
		strings.NewReader(`{"model":"claude-test-1","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("x-api-key", clientToken)
	req.Header.Set("content-type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("got %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(res.Body)
	first, _ := br.ReadString('\n')
	if first != ": keepalive\n" {
		t.Fatalf("first line %q, want a keepalive comment", first)
	}
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "event: message_stop") {
		t.Fatalf("stream did not complete after the wait: %q", rest)
	}
	if d := g.delays.all(); len(d) != 1 || d[0].wait != 5*time.Second || d[0].reason != "overloaded" {
		t.Fatalf("processing delays = %+v", d)
	}
}

func TestRequestValidation(t *testing.T) {
	up := newFakeAnthropic(t)
	g := startGateway(t, up.srv.URL, gwSetup{yaml: `
anthropic:
  baseURL: UPSTREAM
  apiKey: {env: TEST_ANTHROPIC_KEY}
  maxBodyBytes: 1024
auth: {tokensFile: TOKENS}
`})
	cases := []struct {
		name, body string
		status     int
		typ, msg   string
	}{
		{"malformed JSON", `{"model":`, 400, "invalid_request_error", "not valid JSON"},
		{"too large", `{"model":"` + strings.Repeat("x", 2000) + `"}`, 413, "request_too_large", "1024 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := g.client().Messages.New(context.Background(), newParams(), option.WithRequestBody("application/json", []byte(tc.body)))
			var apiErr *sdk.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("want API error, got %v", err)
			}
			if apiErr.StatusCode != tc.status || string(apiErr.Type()) != tc.typ || !strings.Contains(apiErr.Message, tc.msg) {
				t.Fatalf("got %d %q %q", apiErr.StatusCode, apiErr.Type(), apiErr.Message)
			}
		})
	}
	if n := len(up.requests()); n != 0 {
		t.Fatalf("invalid requests reached the upstream %d times", n)
	}
}
