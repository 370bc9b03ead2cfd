// Package sse reads a text/event-stream as the HTML standard defines it: events end
// at a blank line; "data" lines join with newlines; "id" sets the last event id,
// which persists to later events and is what a reconnecting client sends as
// Last-Event-ID; "retry" sets the reconnection delay; lines starting with ":" are
// comments (heartbeats); lines may end with LF, CRLF or CR.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// MaxLine bounds one line, so a broken stream cannot exhaust memory.
const MaxLine = 1 << 20

// Event is one dispatched event.
type Event struct {
	// ID is the last event id at dispatch: the event's own id line, or the latest
	// one before it.
	ID string
	// Type is the "event" field; "message" when the event had none.
	Type string
	// Data is the event's data lines joined with "\n".
	Data string
}

// Reader reads events from a stream.
type Reader struct {
	br *bufio.Reader
	// OnComment, when set, sees each comment line's text (without the colon), e.g.
	// heartbeats.
	OnComment func(text string)

	lastID  string
	retry   time.Duration
	skipLF  bool
	started bool
}

// NewReader reads events from r.
func NewReader(r io.Reader) *Reader { return &Reader{br: bufio.NewReader(r)} }

// LastEventID is the id to send as Last-Event-ID when reconnecting.
func (r *Reader) LastEventID() string { return r.lastID }

// Retry is the reconnection delay the stream asked for, zero if it did not.
func (r *Reader) Retry() time.Duration { return r.retry }

// Next returns the next event. At the end of the stream it returns io.EOF; an
// event not terminated by a blank line is discarded then, as the standard says.
func (r *Reader) Next() (Event, error) {
	var data strings.Builder
	var typ string
	hasData := false
	for {
		line, err := r.readLine()
		if err != nil {
			return Event{}, err
		}
		if line == "" {
			if !hasData {
				typ = ""
				continue
			}
			if typ == "" {
				typ = "message"
			}
			return Event{ID: r.lastID, Type: typ, Data: data.String()}, nil
		}
		if strings.HasPrefix(line, ":") {
			if r.OnComment != nil {
				r.OnComment(strings.TrimPrefix(line[1:], " "))
			}
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			typ = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		case "id":
			if !strings.ContainsRune(value, 0) {
				r.lastID = value
			}
		case "retry":
			if ms, err := strconv.ParseUint(value, 10, 31); err == nil {
				r.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

// readLine returns one line without its terminator. A CR ends a line at once; an LF
// right after it is skipped on the next read, so a live stream never blocks on a
// look-ahead.
func (r *Reader) readLine() (string, error) {
	var buf bytes.Buffer
	for {
		b, err := r.br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return "", io.EOF
			}
			return "", err
		}
		if r.skipLF {
			r.skipLF = false
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\n':
			return r.trimBOM(buf.String()), nil
		case '\r':
			r.skipLF = true
			return r.trimBOM(buf.String()), nil
		}
		if buf.Len() >= MaxLine {
			return "", fmt.Errorf("event stream line longer than %d bytes", MaxLine)
		}
		buf.WriteByte(b)
	}
}

// trimBOM drops a byte order mark at the very start of the stream.
func (r *Reader) trimBOM(line string) string {
	if !r.started {
		r.started = true
		return strings.TrimPrefix(line, "\uFEFF")
	}
	return line
}
