package mcp

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
)

// blockedBody is an upstream body with nothing to read yet: it says when a read
// waits on it.
type blockedBody struct {
	*io.PipeReader
	once    sync.Once
	waiting chan<- struct{}
}

func (b *blockedBody) Read(p []byte) (int, error) {
	b.once.Do(func() { b.waiting <- struct{}{} })
	return b.PipeReader.Read(p)
}

// An idle relayed stream holds no 32 KiB copy buffer, and a large answer is still
// relayed whole. Catches: relay holding its copy buffer for the life of a stream (an
// MCP client's standalone GET stays open as long as its session: 1,000 SDK clients
// held 32 MB on the replica their streams went to, a third of what a session cost
// it).
func TestIdleRelayHoldsNoCopyBuffer(t *testing.T) {
	const streams = 200
	waiting := make(chan struct{}, streams)
	writers := make([]*io.PipeWriter, streams)
	bodies := make([]*blockedBody, streams)
	for i := range streams {
		r, w := io.Pipe()
		writers[i], bodies[i] = w, &blockedBody{PipeReader: r, waiting: waiting}
	}
	before := heapInUse()
	var wg sync.WaitGroup
	for _, body := range bodies {
		wg.Go(func() {
			resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: body}
			_ = relay(httptest.NewRecorder(), resp, "")
		})
	}
	for range streams {
		<-waiting
	}
	perStream := (int64(heapInUse()) - int64(before)) / streams
	for _, w := range writers {
		_ = w.Close()
	}
	wg.Wait()
	if perStream > 8<<10 {
		t.Fatalf("an idle relayed stream holds %d bytes of heap, want at most 8 KiB", perStream)
	}

	// A large answer goes through the copy buffer, whole.
	big := bytes.Repeat([]byte("data: 0123456789abcdef\n\n"), 10_000)
	rec := httptest.NewRecorder()
	resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(big))}
	if err := relay(rec, resp, ""); err != nil || !bytes.Equal(rec.Body.Bytes(), big) {
		t.Fatalf("relayed %d of %d bytes (%v)", rec.Body.Len(), len(big), err)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
