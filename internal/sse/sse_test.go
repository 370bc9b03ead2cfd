package sse

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func readAll(t *testing.T, r *Reader) []Event {
	t.Helper()
	var out []Event
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
}

func equalEvents(a, b []Event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReader(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream string
		want   []Event
	}{
		{"plain", "event: a\ndata: {\"x\":1}\n\n", []Event{{Type: "a", Data: `{"x":1}`}}},
		{"default type and no space after colon", "data:hello\n\n", []Event{{Type: "message", Data: "hello"}}},
		{"only one space is dropped", "data:  two spaces\n\n", []Event{{Type: "message", Data: " two spaces"}}},
		{"multi-line data", "data: one\ndata: two\ndata:\n\n", []Event{{Type: "message", Data: "one\ntwo\n"}}},
		{"field without colon", "data\n\n", []Event{{Type: "message", Data: ""}}},
		{"ids persist until changed", "id: 1\ndata: a\n\ndata: b\n\nid: 3\ndata: c\n\n",
			[]Event{{ID: "1", Type: "message", Data: "a"}, {ID: "1", Type: "message", Data: "b"}, {ID: "3", Type: "message", Data: "c"}}},
		{"empty id resets", "id: 1\ndata: a\n\nid\ndata: b\n\n", []Event{{ID: "1", Type: "message", Data: "a"}, {ID: "", Type: "message", Data: "b"}}},
		{"comments and heartbeats are skipped", ": hello\n\n:keepalive\ndata: x\n: mid\n\n", []Event{{Type: "message", Data: "x"}}},
		{"no data, no event", "event: ping\n\nid: 7\n\ndata: y\n\n", []Event{{ID: "7", Type: "message", Data: "y"}}},
		{"CRLF and CR endings", "event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\r", []Event{{Type: "a", Data: "1"}, {Type: "b", Data: "2"}}},
		{"BOM", "\uFEFFdata: z\n\n", []Event{{Type: "message", Data: "z"}}},
		{"unknown fields ignored", "foo: bar\ndata: w\n\n", []Event{{Type: "message", Data: "w"}}},
		{"unterminated event discarded", "data: done\n\ndata: partial\n", []Event{{Type: "message", Data: "done"}}},
		{"id with NUL ignored", "id: 2\ndata: a\n\nid: x\x00y\ndata: b\n\n", []Event{{ID: "2", Type: "message", Data: "a"}, {ID: "2", Type: "message", Data: "b"}}},
		{"stray blank lines", "\n\n\ndata: q\n\n\n", []Event{{Type: "message", Data: "q"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(tc.stream), iotest.OneByteReader(strings.NewReader(tc.stream))} {
				if got := readAll(t, NewReader(r)); !equalEvents(got, tc.want) {
					t.Fatalf("got %q\nwant %q", got, tc.want)
				}
			}
		})
	}
}

func TestRetryAndComments(t *testing.T) {
	r := NewReader(strings.NewReader("retry: 250\n: ping 1\n: ping 2\nid: 9\ndata: a\n\nretry: x\n\nretry: 1e3\n\n"))
	var comments []string
	r.OnComment = func(s string) { comments = append(comments, s) }
	if got := readAll(t, r); len(got) != 1 {
		t.Fatalf("events %q", got)
	}
	if r.Retry() != 250*time.Millisecond || r.LastEventID() != "9" || strings.Join(comments, "|") != "ping 1|ping 2" {
		t.Fatalf("retry %s, last id %q, comments %q", r.Retry(), r.LastEventID(), comments)
	}
}

func TestLongLineRefused(t *testing.T) {
	r := NewReader(strings.NewReader("data: " + strings.Repeat("a", DefaultMaxLine+1) + "\n\n"))
	if _, err := r.Next(); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("want a line-length error, got %v", err)
	}
	r = NewReader(strings.NewReader("data: " + strings.Repeat("a", 100) + "\n\n"))
	r.MaxLine = 200
	if _, err := r.Next(); err != nil {
		t.Fatalf("a line within the limit: %v", err)
	}
}

// A broken stream is not a clean end: a proxy must tell the two apart.
func TestBrokenStreamKeepsItsError(t *testing.T) {
	cut := errors.New("connection reset")
	r := NewReader(io.MultiReader(strings.NewReader("data: a\n\ndata: b"), iotest.ErrReader(cut)))
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); !errors.Is(err, cut) {
		t.Fatalf("got %v, want the stream's error", err)
	}
}

// Frames keep what a proxy relays (keepalive comments, named events without data)
// and what it decides on (the event name, the frame's own id).
func TestFrames(t *testing.T) {
	r := NewReader(strings.NewReader(": keepalive\r\n\r\nevent: ping\ndata: {}\n\n\nid: 4\nevent: x\n\n"))
	f, err := r.NextFrame()
	if err != nil || f.Dispatched || len(f.Comments) != 1 || f.Comments[0] != "keepalive" || string(f.Bytes) != ": keepalive\n\n" {
		t.Fatalf("comment frame %+v %q (%v)", f, f.Bytes, err)
	}
	f, err = r.NextFrame()
	if err != nil || !f.Dispatched || f.Name != "ping" || f.Event.Data != "{}" || string(f.Bytes) != "event: ping\ndata: {}\n\n" {
		t.Fatalf("event frame %+v %q (%v)", f, f.Bytes, err)
	}
	f, err = r.NextFrame()
	if err != nil || f.Dispatched || !f.HasID || f.ID != "4" || f.Name != "x" {
		t.Fatalf("frame without data %+v (%v)", f, err)
	}
	if _, err := r.NextFrame(); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
}

func TestWriter(t *testing.T) {
	var b bytes.Buffer
	flushed := 0
	w := NewWriter(&b, func() error { flushed++; return nil })
	_ = w.Comment("connected")
	_ = w.Event(Event{ID: "ns/hr-1/3", Type: "healing_progress", Data: `{"a":1}`})
	_ = w.Event(Event{Data: "two\nlines\r\nand\rthree"})
	_ = w.Retry(1500 * time.Millisecond)
	_ = w.Flush()
	want := ": connected\n\n" +
		"id: ns/hr-1/3\nevent: healing_progress\ndata: {\"a\":1}\n\n" +
		"data: two\ndata: lines\ndata: and\ndata: three\n\n" +
		"retry: 1500\n\n"
	if b.String() != want || flushed != 1 {
		t.Fatalf("wrote %q (flushed %d)\nwant %q", b.String(), flushed, want)
	}
	for _, bad := range []Event{{ID: "a\nb"}, {ID: "a\x00"}, {Type: "x\ry"}} {
		if err := w.Event(bad); !errors.Is(err, ErrInvalidField) {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
}

func TestStartSetsTheHeadersOnce(t *testing.T) {
	rec := &recorder{h: http.Header{}}
	rec.h.Set("Mcp-Session-Id", "s1")
	w := Start(rec)
	_ = w.Event(Event{Data: "x"})
	if rec.code != 200 || rec.h.Get("Content-Type") != "text/event-stream" || rec.h.Get("Cache-Control") != "no-cache" ||
		rec.h.Get("X-Accel-Buffering") != "no" || rec.h.Get("Mcp-Session-Id") != "s1" || !IsStream(rec.h) {
		t.Fatalf("status %d headers %v", rec.code, rec.h)
	}
	if !IsStream(http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}}) || IsStream(http.Header{"Content-Type": {"application/json"}}) {
		t.Fatal("IsStream")
	}
}

type recorder struct {
	h    http.Header
	code int
	b    bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) WriteHeader(c int)           { r.code = c }
func (r *recorder) Write(p []byte) (int, error) { return r.b.Write(p) }
func (r *recorder) Flush()                      {}

func TestAccept(t *testing.T) {
	for _, tc := range []struct {
		accept          string
		accepts, prefer bool
	}{
		{"", false, true},
		{"text/event-stream", true, true},
		{"application/json, text/event-stream", true, true},
		{"application/json", false, false},
		{"application/json;q=0.9, text/event-stream;q=0.1", true, true},
		{"text/event-stream;q=0, application/json", false, false},
		{"*/*", true, true},
		{"TEXT/Event-Stream", true, true},
		{"text/html", false, true},
		{"garbage;;=", false, true},
	} {
		h := http.Header{}
		if tc.accept != "" {
			h.Set("Accept", tc.accept)
		}
		if got := AcceptsStream(h); got != tc.accepts {
			t.Errorf("AcceptsStream(%q) = %v", tc.accept, got)
		}
		if got := PrefersStream(h); got != tc.prefer {
			t.Errorf("PrefersStream(%q) = %v", tc.accept, got)
		}
	}
}

// What the Writer writes, the Reader reads back unchanged.
func FuzzRoundTrip(f *testing.F) {
	f.Add("1", "healing_progress", "{\"a\":1}")
	f.Add("", "", "line one\nline two\r\nthree\r")
	f.Add("ns/name/7", "x", "")
	f.Fuzz(func(t *testing.T, id, typ, data string) {
		var b bytes.Buffer
		w := NewWriter(&b, nil)
		if err := w.Event(Event{ID: id, Type: typ, Data: data}); err != nil {
			if !errors.Is(err, ErrInvalidField) {
				t.Fatal(err)
			}
			return
		}
		r := NewReader(&b)
		r.MaxLine = b.Len() + 1
		got, err := r.Next()
		if err != nil {
			t.Fatalf("reading back %q: %v", b.String(), err)
		}
		wantData := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(data)
		wantType := typ
		if typ == "" {
			wantType = "message"
		}
		// A BOM at the very start of a stream is dropped by readers.
		if strings.HasPrefix(b.String(), "\uFEFF") {
			return
		}
		if got.ID != id || got.Type != wantType || got.Data != wantData {
			t.Fatalf("wrote %+v, read %+v", Event{ID: id, Type: typ, Data: data}, got)
		}
	})
}

// Whatever the bytes, the reader neither panics nor returns a line over its limit,
// and reading one byte at a time gives the same events.
func FuzzReader(f *testing.F) {
	f.Add([]byte("id: 1\nevent: a\ndata: x\n\n: c\r\ndata: y\r\r"))
	f.Add([]byte("\uFEFFdata:\ndata\n\nretry: 10\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		read := func(r io.Reader) ([]Event, error) {
			sr := NewReader(r)
			sr.MaxLine = 64
			var out []Event
			for {
				ev, err := sr.Next()
				if err != nil {
					if errors.Is(err, io.EOF) {
						return out, nil
					}
					return out, err
				}
				out = append(out, ev)
			}
		}
		a, errA := read(bytes.NewReader(in))
		b, errB := read(iotest.OneByteReader(bytes.NewReader(in)))
		if (errA == nil) != (errB == nil) || !equalEvents(a, b) {
			t.Fatalf("chunking changed the result: %q (%v) vs %q (%v)", a, errA, b, errB)
		}
	})
}
