// Package sse writes and reads Server-Sent Events (text/event-stream) as the HTML
// standard defines them, for every stream of the product: the gateway's healing
// events and report streams, the MCP and Anthropic proxies where they look into a
// stream, the demo's chat client and the tests.
//
// Reading: events end at a blank line; "data" lines join with newlines; "id" sets the
// last event id, which persists to later events and is what a reconnecting client
// sends as Last-Event-ID; "retry" sets the reconnection delay; lines starting with ":"
// are comments (heartbeats); lines may end with LF, CRLF or CR; a leading byte order
// mark is dropped; an event not ended by a blank line when the stream ends is
// discarded.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// DefaultMaxLine bounds one line, so a broken or hostile stream cannot exhaust memory.
const DefaultMaxLine = 1 << 20

// ErrLineTooLong is returned for a line longer than the reader's limit.
var ErrLineTooLong = errors.New("event stream line too long")

// Event is one dispatched event.
type Event struct {
	// ID is the last event id at dispatch: the event's own id line, or the latest one
	// before it. Writing, it is the event's id line ("" writes none).
	ID string
	// Type is the "event" field; "message" when the event had none. Writing, "" writes
	// no event line (the client sees "message").
	Type string
	// Data is the event's data lines joined with "\n".
	Data string
}

// Frame is one block of a stream: the lines up to the blank line that ends them. A
// frame with data dispatches an event; one with only comments, an id or an event
// name does not (a proxy still relays it, e.g. a keepalive comment).
type Frame struct {
	// Event is what the frame dispatched, when Dispatched.
	Event      Event
	Dispatched bool
	// Name is the frame's own event field, "" when it has none.
	Name string
	// ID is the frame's own id field; HasID says it had one.
	ID    string
	HasID bool
	// Comments are the frame's comment lines, without the colon and one space.
	Comments []string
	// Bytes is the frame as read, each line ended by "\n", ending with the blank line.
	// It is valid until the next call on the Reader.
	Bytes []byte
}

// Reader reads events from a stream.
type Reader struct {
	br *bufio.Reader
	// MaxLine bounds one line (default DefaultMaxLine).
	MaxLine int
	// OnComment, when set, sees each comment line's text (without the colon and one
	// space), e.g. heartbeats, as Next reads it.
	OnComment func(text string)

	lastID  string
	retry   time.Duration
	skipLF  bool
	started bool
	line    []byte
	raw     []byte
}

// NewReader reads events from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 16<<10), MaxLine: DefaultMaxLine}
}

// Reset makes r read from src as a new stream, keeping its buffers (for pools).
func (r *Reader) Reset(src io.Reader) {
	r.br.Reset(src)
	r.lastID, r.retry, r.skipLF, r.started = "", 0, false, false
	r.line, r.raw = r.line[:0], r.raw[:0]
}

// Buffered is how many bytes have been read from the stream but not yet parsed: zero
// means the next frame is not here yet, the moment for a relay to flush.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// LastEventID is the id to send as Last-Event-ID when reconnecting.
func (r *Reader) LastEventID() string { return r.lastID }

// Retry is the reconnection delay the stream asked for, zero if it did not.
func (r *Reader) Retry() time.Duration { return r.retry }

// Next returns the next event. At the end of the stream it returns io.EOF; an event
// not ended by a blank line is discarded then, as the standard says.
func (r *Reader) Next() (Event, error) {
	for {
		f, err := r.NextFrame()
		if err != nil {
			return Event{}, err
		}
		if r.OnComment != nil {
			for _, c := range f.Comments {
				r.OnComment(c)
			}
		}
		if f.Dispatched {
			return f.Event, nil
		}
	}
}

// NextFrame returns the next frame (blank lines between frames are skipped). At the
// end of the stream it returns io.EOF (a frame cut short is discarded); a broken
// stream returns its error.
func (r *Reader) NextFrame() (Frame, error) {
	var f Frame
	var data []byte
	hasData, lines := false, 0
	r.raw = r.raw[:0]
	for {
		line, err := r.readLine()
		if err != nil {
			return Frame{}, err
		}
		r.raw = append(append(r.raw, line...), '\n')
		if len(line) == 0 {
			if lines == 0 {
				r.raw = r.raw[:0]
				continue // a blank line between frames
			}
			f.Bytes = r.raw
			if hasData {
				typ := f.Name
				if typ == "" {
					typ = "message"
				}
				f.Event, f.Dispatched = Event{ID: r.lastID, Type: typ, Data: string(data)}, true
			}
			return f, nil
		}
		lines++
		if line[0] == ':' {
			f.Comments = append(f.Comments, string(bytes.TrimPrefix(line[1:], []byte(" "))))
			continue
		}
		field, value, found := bytes.Cut(line, []byte(":"))
		if found {
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(field) {
		case "event":
			f.Name = string(value)
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				f.ID, f.HasID = string(value), true
				r.lastID = f.ID
			}
		case "retry":
			if ms, err := strconv.ParseUint(string(value), 10, 31); err == nil && isDigits(value) {
				r.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

// readLine returns one line without its terminator, valid until the next call. A CR
// ends a line at once; an LF right after it is skipped on the next read, so a live
// stream never blocks on a look-ahead.
func (r *Reader) readLine() ([]byte, error) {
	r.line = r.line[:0]
	limit := r.MaxLine
	if limit <= 0 {
		limit = DefaultMaxLine
	}
	for {
		if r.skipLF {
			b, err := r.br.ReadByte()
			if err != nil {
				return nil, eof(err)
			}
			r.skipLF = false
			if b != '\n' {
				_ = r.br.UnreadByte()
			}
		}
		buf, err := r.br.Peek(max(1, r.br.Buffered()))
		if len(buf) == 0 {
			return nil, eof(err)
		}
		i := bytes.IndexAny(buf, "\r\n")
		if i < 0 {
			if len(r.line)+len(buf) > limit {
				return nil, fmt.Errorf("%w: longer than %d bytes", ErrLineTooLong, limit)
			}
			r.line = append(r.line, buf...)
			_, _ = r.br.Discard(len(buf))
			continue
		}
		if len(r.line)+i > limit {
			return nil, fmt.Errorf("%w: longer than %d bytes", ErrLineTooLong, limit)
		}
		r.line = append(r.line, buf[:i]...)
		r.skipLF = buf[i] == '\r'
		_, _ = r.br.Discard(i + 1)
		if !r.started {
			r.started = true
			r.line = bytes.TrimPrefix(r.line, []byte("\uFEFF"))
		}
		return r.line, nil
	}
}

// eof is the error of a stream that ended: io.EOF when it ended cleanly (a partial
// line is dropped with the frame it belonged to), else the stream's own error.
func eof(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return io.EOF
	}
	return err
}
