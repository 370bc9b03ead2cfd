package healing

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// raiseFDLimit lifts the open-files limit so both ends of n loopback connections fit.
func raiseFDLimit(b *testing.B, need uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur >= need {
		return
	}
	want := lim
	want.Cur = need
	if want.Max < need {
		want.Max = need // needs CAP_SYS_RESOURCE; fall back to the hard limit
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		want.Cur, want.Max = lim.Max, lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			b.Fatal(err)
		}
	}
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if lim.Cur < need {
		b.Skipf("open-files limit %d is below the %d this benchmark needs", lim.Cur, need)
	}
}

func inUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// benchClientEnv makes the test binary a client process for the benchmark: the
// subscribers' ends of the connections live there, so the two ends fit in two
// processes' open-file limits and the server's memory is measured alone.
const benchClientEnv = "SELFHEAL_SSE_BENCH_CLIENT"

// runBenchClient opens n subscriptions to addr, says "ready", and holds them until
// stdin closes.
func runBenchClient(addr string, n int) {
	request := []byte(fmt.Sprintf("GET /?service=tools HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", addr))
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Fprintf(os.Stdout, "error: dial %d: %v\n", len(conns), err)
			os.Exit(1)
		}
		if _, err := c.Write(request); err != nil {
			fmt.Fprintf(os.Stdout, "error: %v\n", err)
			os.Exit(1)
		}
		conns = append(conns, c)
	}
	fmt.Fprintln(os.Stdout, "ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	// Check a few subscribers received the event the benchmark published.
	for _, c := range []net.Conn{conns[0], conns[n/2], conns[n-1]} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil) //nolint:bodyclose // an endless SSE body: Close would drain it until the deadline; the process exits instead
		if err != nil {
			os.Exit(2)
		}
		body := bufio.NewReader(resp.Body)
		for {
			line, err := body.ReadString('\n')
			if err != nil {
				os.Exit(3)
			}
			if strings.HasPrefix(line, "event: "+EventHealingStart) {
				break
			}
		}
	}
	os.Exit(0)
}

// BenchmarkIdleSSESubscribers measures the memory one idle subscriber of
// GET /v1/healing/events costs the gateway: 10,000 real HTTP/1.1 connections on
// loopback, opened by a child process, and HeapInuse+StackInuse of this process.
func BenchmarkIdleSSESubscribers(b *testing.B) {
	const n = 10000
	raiseFDLimit(b, n+1024)
	for b.Loop() {
		hub := NewHub(HubOptions{})
		srv := httptest.NewUnstartedServer(NewEventsHandler(hub, StreamOptions{}))
		srv.Config.ReadHeaderTimeout = 10 * time.Second
		srv.Start()
		addr := srv.Listener.Addr().String()

		before := inUse()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", benchClientEnv, addr, n))
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		if strings.TrimSpace(line) != "ready" {
			b.Fatalf("client process: %q", line)
		}
		deadline := time.Now().Add(60 * time.Second)
		for hub.Subscribers() < n {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d subscribers registered", hub.Subscribers(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond) // let every handler reach its idle wait
		after := inUse()
		perSub := float64(after-before) / n
		b.ReportMetric(perSub, "B/subscriber")

		// They are live subscribers: the published event reaches them.
		hub.Publish(Event{Type: EventHealingStart, Namespace: "ns", Service: "tools", Request: "tools-1"})
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			b.Fatalf("client process: %v (the event did not reach its subscribers)", err)
		}
		srv.CloseClientConnections()
		srv.Close()
		b.Logf("%d idle subscribers: %.0f bytes each (HeapInuse+StackInuse delta %d bytes)", n, perSub, after-before)
	}
}
