package sse

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ContentType is the media type of an event stream.
const ContentType = "text/event-stream"

// SetHeaders sets the response headers of an event stream: its type, no caching, and
// no buffering by proxies in between (nginx honours X-Accel-Buffering).
func SetHeaders(h http.Header) {
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
}

// IsStream reports whether a response's Content-Type is an event stream.
func IsStream(h http.Header) bool {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	return err == nil && mt == ContentType
}

// ErrInvalidField is returned for an id or event type that would break the framing:
// a line break (or, in an id, a NUL, which readers ignore).
var ErrInvalidField = errors.New("sse: id or event type contains a line break or NUL")

// Writer writes events, each in one Write, and flushes on request. After the first
// failed write every call returns that error.
type Writer struct {
	w     io.Writer
	flush func() error
	buf   bytes.Buffer
	err   error
}

// NewWriter writes an event stream to w; flush (nil for none) pushes written bytes to
// the client. Use Start for an http.ResponseWriter.
func NewWriter(w io.Writer, flush func() error) *Writer {
	if flush == nil {
		flush = func() error { return nil }
	}
	return &Writer{w: w, flush: flush}
}

// Start begins an event stream on w: it sets the stream's headers (SetHeaders; any
// other header, such as Mcp-Session-Id, must be set before), answers 200 and flushes,
// so the client sees the stream open at once.
func Start(w http.ResponseWriter) *Writer {
	SetHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	sw := ForResponse(w)
	_ = sw.Flush()
	return sw
}

// ForResponse writes events to a response whose headers are already sent (or set by
// the caller), flushing through http.ResponseController.
func ForResponse(w http.ResponseWriter) *Writer {
	rc := http.NewResponseController(w)
	return NewWriter(w, rc.Flush)
}

// Event writes one event: its id line (when ID is set), its event line (when Type is
// set) and one data line per line of Data (so data holding line breaks survives).
func (w *Writer) Event(e Event) error {
	if strings.ContainsAny(e.ID, "\r\n\x00") || strings.ContainsAny(e.Type, "\r\n") {
		return ErrInvalidField
	}
	w.buf.Reset()
	if e.ID != "" {
		w.buf.WriteString("id: ")
		w.buf.WriteString(e.ID)
		w.buf.WriteByte('\n')
	}
	if e.Type != "" {
		w.buf.WriteString("event: ")
		w.buf.WriteString(e.Type)
		w.buf.WriteByte('\n')
	}
	writeData(&w.buf, e.Data)
	w.buf.WriteByte('\n')
	return w.write()
}

// writeData writes data as "data:" lines, splitting at LF, CRLF and CR.
func writeData(b *bytes.Buffer, data string) {
	for {
		i := strings.IndexAny(data, "\r\n")
		b.WriteString("data: ")
		if i < 0 {
			b.WriteString(data)
			b.WriteByte('\n')
			return
		}
		b.WriteString(data[:i])
		b.WriteByte('\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// Comment writes a comment line (heartbeats, "connected"); readers ignore it. A line
// break in text starts another comment line.
func (w *Writer) Comment(text string) error {
	w.buf.Reset()
	for _, line := range strings.FieldsFunc(text, func(r rune) bool { return r == '\r' || r == '\n' }) {
		w.buf.WriteString(": ")
		w.buf.WriteString(line)
		w.buf.WriteByte('\n')
	}
	if w.buf.Len() == 0 {
		w.buf.WriteString(":\n")
	}
	w.buf.WriteByte('\n')
	return w.write()
}

// Retry tells the client how long to wait before reconnecting.
func (w *Writer) Retry(d time.Duration) error {
	w.buf.Reset()
	w.buf.WriteString("retry: ")
	w.buf.WriteString(strconv.FormatInt(d.Milliseconds(), 10))
	w.buf.WriteString("\n\n")
	return w.write()
}

// Raw writes bytes that already are whole frames (a relayed upstream frame).
func (w *Writer) Raw(frames []byte) error {
	if w.err == nil {
		_, w.err = w.w.Write(frames)
	}
	return w.err
}

func (w *Writer) write() error {
	if w.err == nil {
		_, w.err = w.w.Write(w.buf.Bytes())
	}
	if w.buf.Cap() > 4<<10 {
		// Idle streams are many: none keeps a large event's buffer for its life.
		w.buf = bytes.Buffer{}
	}
	return w.err
}

// Flush pushes what was written to the client.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if err := w.flush(); err != nil {
		w.err = err
	}
	return w.err
}

// Err is the first write or flush error, nil while the stream is healthy.
func (w *Writer) Err() error { return w.err }
