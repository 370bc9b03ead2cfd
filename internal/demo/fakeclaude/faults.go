package fakeclaude

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Fault is a misbehaviour applied to one request. Faults are queued with
// Server.Inject and consumed in order, one per request to /v1/messages.
type Fault struct {
	// Name identifies the fault in the request log.
	Name string
	// Status, when set, answers with this status and an API error body of ErrorType
	// and Message (and Details, as error.details, when set).
	Status    int
	ErrorType string
	Message   string
	Details   map[string]any
	// Header is added to the response (e.g. retry-after, x-should-retry).
	Header map[string]string
	// Delay holds the answer back (no byte is written) for this long first; the
	// request is then answered as the rest of the fault says, or normally.
	Delay time.Duration
	// InBand streams a 200 with message_start and then an error event of ErrorType
	// and Message, as the API does when it overloads mid-request. A non-streaming
	// request gets the error as a 529 instead.
	InBand bool
	// Reset closes the connection without an answer (a TCP reset).
	Reset bool
	// CutAfterDeltas cuts the connection after this many content deltas of a
	// streamed answer (a non-streaming answer is cut in the middle of its body).
	CutAfterDeltas int
}

// Predefined faults.
var (
	// Fault529 is the API's "overloaded" status.
	Fault529 = Fault{Name: "529-overloaded", Status: 529, ErrorType: "overloaded_error", Message: "Overloaded"}
	// Fault500 is an internal server error.
	Fault500 = Fault{Name: "500-api-error", Status: 500, ErrorType: "api_error", Message: "Internal server error"}
	// FaultOverloadedInBand is an overloaded_error event in a 200 stream, before any
	// content block.
	FaultOverloadedInBand = Fault{Name: "overloaded-in-band", InBand: true, ErrorType: "overloaded_error", Message: "Overloaded"}
	// FaultConnReset resets the connection before any byte of the answer.
	FaultConnReset = Fault{Name: "connection-reset", Reset: true}
	// FaultMidStreamCut cuts the connection after the first content delta.
	FaultMidStreamCut = Fault{Name: "mid-stream-cut", CutAfterDeltas: 1}
	// FaultSpendLimit429 is a 429 that no retry can fix: the organization reached
	// its spend limit.
	FaultSpendLimit429 = Fault{Name: "429-spend-limit", Status: 429, ErrorType: "rate_limit_error",
		Message: "You have reached your specified API usage limits. You will regain access on 2026-04-01 at 00:00 UTC.",
		Details: map[string]any{"error_code": "enforced_spend_limit_reached"}}
	// FaultUnauthorized is a 401, which must never be retried.
	FaultUnauthorized = Fault{Name: "401-authentication", Status: 401, ErrorType: "authentication_error", Message: "invalid x-api-key"}
)

// Fault429RetryAfter is a rate limit answer that asks to wait d, in both
// retry-after (whole seconds, rounded up) and retry-after-ms.
func Fault429RetryAfter(d time.Duration) Fault {
	return Fault{
		Name: "429-retry-after-" + d.String(), Status: 429, ErrorType: "rate_limit_error",
		Message: "Number of request tokens has exceeded your per-minute rate limit",
		Header: map[string]string{
			"retry-after":    strconv.Itoa(int(math.Ceil(d.Seconds()))),
			"retry-after-ms": strconv.FormatInt(d.Milliseconds(), 10),
		},
	}
}

// FaultSlowFirstByte delays the answer by d, then answers normally.
func FaultSlowFirstByte(d time.Duration) Fault {
	return Fault{Name: "slow-first-byte-" + d.String(), Delay: d}
}

// FaultStatus answers with any status and API error type.
func FaultStatus(status int, errorType, message string) Fault {
	return Fault{Name: fmt.Sprintf("%d-%s", status, errorType), Status: status, ErrorType: errorType, Message: message}
}

// WithHeader returns f with a response header added, e.g. x-should-retry: false.
func (f Fault) WithHeader(key, value string) Fault {
	h := make(map[string]string, len(f.Header)+1)
	for k, v := range f.Header {
		h[k] = v
	}
	h[key] = value
	f.Header = h
	f.Name += "+" + key + "=" + value
	return f
}
