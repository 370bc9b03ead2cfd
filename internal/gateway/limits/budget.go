// Package limits bounds what one gateway process holds for its clients: bytes of
// request bodies buffered for retry and replay, open connections, and long-lived
// streams. Every limit refuses at once (it never queues), and every refusal is
// counted in metrics by reason.
package limits

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// Errors of ReadBody. Callers answer them in their own error shape: ErrTooLarge
// with 413, ErrBudget with 503 and Retry-After (see RetryAfterSeconds).
var (
	ErrTooLarge = errors.New("request body too large")
	ErrBudget   = errors.New("gateway busy: buffered request bytes at their limit")
)

// RetryAfterSeconds is what a refusal for a spent budget or cap tells the client to
// wait: long enough for typical calls to finish and release what they hold.
const RetryAfterSeconds = 1

// reserveStep is how much a body of unknown length reserves at a time.
const reserveStep = 64 << 10

// Budget bounds the bytes of request bodies the gateway holds in memory at once,
// across all requests. Reservations are refused, never waited for, so a flood of
// large bodies is answered instead of exhausting memory.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget {
	b := &Budget{limit: limit}
	bufferedLimit.Set(float64(limit))
	return b
}

// Limit is the budget's size in bytes.
func (b *Budget) Limit() int64 { return b.limit }

// Used is the number of bytes reserved now.
func (b *Budget) Used() int64 { return b.used.Load() }

// reserve takes n bytes, or nothing when that would exceed the limit.
func (b *Budget) reserve(n int64) bool {
	for {
		cur := b.used.Load()
		if cur+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(cur, cur+n) {
			bufferedBytes.Add(float64(n))
			return true
		}
	}
}

func (b *Budget) release(n int64) {
	if n > 0 {
		b.used.Add(-n)
		bufferedBytes.Sub(float64(n))
	}
}

// Body is a request body read whole, holding its reservation until Release.
type Body struct {
	Bytes    []byte
	budget   *Budget
	reserved int64
}

// Release returns the body's bytes to the budget. It is safe to call more than once
// and on a nil Body.
func (b *Body) Release() {
	if b == nil || b.budget == nil {
		return
	}
	b.budget.release(b.reserved)
	b.reserved = 0
}

// ReadBody reads r's body whole, at most max bytes, reserving its size from budget
// first (a nil budget reserves nothing). A body whose declared length exceeds max or
// the budget is refused before any of it is read; a body of unknown length reserves
// as it arrives. On ErrTooLarge and ErrBudget the caller should answer with Refuse,
// so the rest of the body is never read.
func ReadBody(r *http.Request, limit int64, budget *Budget) (*Body, error) {
	if r.ContentLength > limit {
		refusals.WithLabelValues(ReasonBodyTooLarge).Inc()
		return nil, fmt.Errorf("%w: %d bytes declared, the limit is %d", ErrTooLarge, r.ContentLength, limit)
	}
	b := &Body{budget: budget}
	take := func(n int64) bool {
		if budget == nil {
			return true
		}
		if !budget.reserve(n) {
			refusals.WithLabelValues(ReasonBodyBudget).Inc()
			return false
		}
		b.reserved += n
		return true
	}
	if r.ContentLength >= 0 {
		if !take(r.ContentLength) {
			return nil, ErrBudget
		}
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			b.Release()
			return nil, err
		}
		b.Bytes = buf
		return b, nil
	}
	// Unknown length (chunked): grow in steps, each reserved before it is used.
	// Capacity doubles, so copying stays linear; one byte past the limit is room
	// to notice a body that is too large.
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			grow := min(max(int64(cap(buf)), reserveStep), limit+1-int64(len(buf)))
			if !take(grow) {
				b.Release()
				return nil, ErrBudget
			}
			nb := make([]byte, len(buf), int64(cap(buf))+grow)
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			b.Release()
			refusals.WithLabelValues(ReasonBodyTooLarge).Inc()
			return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
		}
		if errors.Is(err, io.EOF) {
			b.Bytes = buf
			return b, nil
		}
		if err != nil {
			b.Release()
			return nil, err
		}
	}
}

// Refuse marks the response as the last on its connection and stops reading the
// request. Call it before writing a refusal whose request body was not read:
// net/http would otherwise drain (up to 256 KiB of) the unread body before and
// after answering, which a client dripping its body turns into a held connection.
// The answer is still written; only reads end.
func Refuse(w http.ResponseWriter, retryAfter bool) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	w.Header().Set("Connection", "close")
	if retryAfter {
		w.Header().Set("Retry-After", fmt.Sprint(RetryAfterSeconds))
	}
}
