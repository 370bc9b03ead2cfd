package anthropic

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Retry reasons, the values of the retries metric's reason label.
const (
	ReasonConnection     = "connection_error"
	ReasonTimeout        = "timeout"
	ReasonRequestTimeout = "request_timeout" // 408
	ReasonConflict       = "conflict"        // 409
	ReasonRateLimited    = "rate_limited"    // 429
	ReasonOverloaded     = "overloaded"      // 529
	ReasonServerError    = "server_error"    // other 5xx
	ReasonShouldRetry    = "x_should_retry"  // the upstream asked for it
	ReasonStreamOverload = "stream_overloaded_error"
	ReasonStreamCut      = "stream_cut_before_content"
)

// spendLimitCodes are error.details.error_code values of 429s that no wait
// cures (the organization is out of budget until a limit changes).
var spendLimitCodes = map[string]bool{
	"enforced_spend_limit_reached":            true,
	"contract_spend_limit_reached":            true,
	"linked_organization_spend_limit_reached": true,
}

// isSpendLimit reports whether an error body says a spend, usage or credit
// limit was hit. The code is authoritative; the message words cover older
// responses that carry no details.
func isSpendLimit(body []byte) bool {
	e, ok := parseUpstreamError(body)
	if !ok {
		return false
	}
	if spendLimitCodes[e.Error.Details.ErrorCode] {
		return true
	}
	m := strings.ToLower(e.Error.Message)
	for _, w := range []string{"spend limit", "usage limit", "credit balance", "billing"} {
		if strings.Contains(m, w) {
			return true
		}
	}
	return false
}

// retryReason decides whether a response may be retried and why; "" means
// no. A spend-limit 429 is never retried; otherwise x-should-retry, when
// present, overrides the status rule, as the official SDKs do.
func retryReason(status int, h http.Header, body []byte) string {
	if status == http.StatusTooManyRequests && isSpendLimit(body) {
		return ""
	}
	switch h.Get("X-Should-Retry") {
	case "true":
		return ReasonShouldRetry
	case "false":
		return ""
	}
	switch {
	case status == http.StatusRequestTimeout:
		return ReasonRequestTimeout
	case status == http.StatusConflict:
		return ReasonConflict
	case status == http.StatusTooManyRequests:
		return ReasonRateLimited
	case status == 529:
		return ReasonOverloaded
	case status >= 500:
		return ReasonServerError
	}
	return ""
}

// retryAfter reads the server's requested wait: retry-after-ms first, then
// retry-after as seconds or an HTTP date. ok is false when neither parses.
func retryAfter(h http.Header, now time.Time) (d time.Duration, ok bool) {
	if h == nil {
		return 0, false
	}
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(ms) && !math.IsInf(ms, 0) {
			return max(0, time.Duration(ms*float64(time.Millisecond))), true
		}
	}
	if v := h.Get("Retry-After"); v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(s) && !math.IsInf(s, 0) {
			return max(0, time.Duration(s*float64(time.Second))), true
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(0, t.Sub(now)), true
		}
	}
	return 0, false
}

// backoff is exponential with full jitter: uniform in [0, min(max, base*2^n)).
func backoff(attempt int, base, maxWait time.Duration, rnd func() float64) time.Duration {
	ceil := float64(base) * math.Pow(2, float64(attempt))
	if ceil > float64(maxWait) {
		ceil = float64(maxWait)
	}
	return time.Duration(rnd() * ceil)
}
