package anthropic

import (
	"net/http"
	"testing"
	"time"
)

func TestRetryReason(t *testing.T) {
	spend := []byte(`{"type":"error","error":{"type":"rate_limit_error","message":"x","details":{"error_code":"contract_spend_limit_reached"}}}`)
	credit := []byte(`{"type":"error","error":{"type":"rate_limit_error","message":"Your credit balance is too low"}}`)
	plain429 := []byte(`{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}`)
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	cases := []struct {
		status int
		header http.Header
		body   []byte
		want   string
	}{
		{429, nil, plain429, ReasonRateLimited},
		{429, nil, spend, ""},
		{429, nil, credit, ""},
		{429, h("x-should-retry", "true"), spend, ""},
		{529, nil, nil, ReasonOverloaded},
		{529, h("x-should-retry", "false"), nil, ""},
		{500, nil, nil, ReasonServerError},
		{503, nil, nil, ReasonServerError},
		{408, nil, nil, ReasonRequestTimeout},
		{409, nil, nil, ReasonConflict},
		{400, nil, nil, ""},
		{401, nil, nil, ""},
		{404, nil, nil, ""},
		{413, nil, nil, ""},
		{400, h("x-should-retry", "true"), nil, ReasonShouldRetry},
	}
	for _, tc := range cases {
		hdr := tc.header
		if hdr == nil {
			hdr = http.Header{}
		}
		if got := retryReason(tc.status, hdr, tc.body); got != tc.want {
			t.Errorf("retryReason(%d, %v, %s) = %q, want %q", tc.status, tc.header, tc.body, got, tc.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		ms, s string
		want  time.Duration
		ok    bool
	}{
		{"250", "", 250 * time.Millisecond, true},
		{"250", "9", 250 * time.Millisecond, true},
		{"junk", "2", 2 * time.Second, true},
		{"", "1.5", 1500 * time.Millisecond, true},
		{"", now.Add(7 * time.Second).Format(http.TimeFormat), 7 * time.Second, true},
		{"", now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"", "-3", 0, true},
		{"", "soon", 0, false},
		{"", "", 0, false},
	}
	for _, tc := range cases {
		hd := http.Header{}
		if tc.ms != "" {
			hd.Set("retry-after-ms", tc.ms)
		}
		if tc.s != "" {
			hd.Set("retry-after", tc.s)
		}
		got, ok := retryAfter(hd, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("retryAfter(ms=%q, s=%q) = %v %v, want %v %v", tc.ms, tc.s, got, ok, tc.want, tc.ok)
		}
	}
}

func TestBackoffFullJitter(t *testing.T) {
	base, maxW := 500*time.Millisecond, 8*time.Second
	for attempt, want := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		if got := backoff(attempt, base, maxW, func() float64 { return 0.999999999 }); got > want || got < want*99/100 {
			t.Errorf("attempt %d ceiling %v, want %v", attempt, got, want)
		}
		if got := backoff(attempt, base, maxW, func() float64 { return 0 }); got != 0 {
			t.Errorf("full jitter must reach 0, got %v", got)
		}
	}
}

func TestErrorEventType(t *testing.T) {
	if got := errorEventType(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`); got != ErrOverloaded {
		t.Fatalf("got %q", got)
	}
	if got := errorEventType("not json"); got != "" {
		t.Fatalf("got %q", got)
	}
}
