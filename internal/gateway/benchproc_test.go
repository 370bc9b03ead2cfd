package gateway_test

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
)

// A benchmark that measures what a server holds per client runs the server and the
// clients in processes of their own: this test binary started again, playing one
// part (a role). Each process's heap and goroutines are then its own, a fresh process
// measures each variant (the runtime never frees a goroutine's descriptor, so a second
// variant in one process would reuse the first one's), and the two ends of 10,000
// connections do not share one process's open-files limit.
const (
	benchRoleEnv = "SELFHEAL_BENCH_ROLE"
	benchArgsEnv = "SELFHEAL_BENCH_ARGS"
	// benchLinePrefix marks a child's lines to its benchmark among the test
	// framework's own output.
	benchLinePrefix = "bench: "
)

// benchRoles are the parts a child process can play.
var benchRoles = map[string]func(t *testing.T, args []string, ctl *benchControl){
	"sse-gateway":  runSSEGateway,
	"sse-plain":    runSSEPlain,
	"sse-clients":  runSSEClients,
	"mcp-upstream": runMCPUpstream,
	"mcp-gateway":  runMCPGateway,
}

// TestMain leaves TestBenchChild out of every run but a benchmark's child process
// (-test.skip), so an ordinary test run neither runs nor reports it.
func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getenv(benchRoleEnv) == "" {
		skip := "^TestBenchChild$"
		if s := flag.Lookup("test.skip").Value.String(); s != "" {
			skip = s + "|" + skip
		}
		if err := flag.Set("test.skip", skip); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}

// TestBenchChild is no test: it plays one part of a benchmark when a benchmark starts
// this binary as its child (startBenchChild).
func TestBenchChild(t *testing.T) {
	role := os.Getenv(benchRoleEnv)
	run, ok := benchRoles[role]
	if !ok {
		t.Fatalf("unknown benchmark role %q (%s is set by a benchmark starting this binary as its child)", role, benchRoleEnv)
	}
	ctrl.SetLogger(logr.Discard())
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv(benchArgsEnv)), &args); err != nil {
		t.Fatalf("%s: %v", benchArgsEnv, err)
	}
	run(t, args, &benchControl{in: bufio.NewScanner(os.Stdin)})
}

// benchControl is a child's line to its benchmark: commands on stdin, answers on
// stdout.
type benchControl struct{ in *bufio.Scanner }

// say sends the benchmark one line: a word, then its values.
func (c *benchControl) say(word string, values ...any) {
	fmt.Fprintln(os.Stdout, append([]any{benchLinePrefix + word}, values...)...)
}

// serve answers the benchmark's commands until it closes stdin: "stats" with this
// process's procStats (count is what the role counts: subscribers, sessions), and
// "publish" (when publish is set) once publish has returned.
func (c *benchControl) serve(count func() int, publish func()) {
	for c.in.Scan() {
		switch c.in.Text() {
		case "stats":
			s := measure()
			c.say("stats", s.heap, s.goroutines, count())
		case "publish":
			if publish != nil {
				publish()
				c.say("published")
			}
		}
	}
}

// waitForEnd returns when the benchmark closes stdin.
func (c *benchControl) waitForEnd() {
	for c.in.Scan() {
	}
}

// procStats is what a process holds: HeapInuse+StackInuse after two collections,
// its goroutines, and what its role counts.
type procStats struct {
	heap       int64
	goroutines int
	count      int
}

func measure() procStats {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return procStats{heap: int64(ms.HeapInuse + ms.StackInuse), goroutines: runtime.NumGoroutine()}
}

// perClient is what n clients added between idle and loaded, per client.
func perClient(idle, loaded procStats, n int) (heapBytes, goroutines float64) {
	return float64(loaded.heap-idle.heap) / float64(n), float64(loaded.goroutines-idle.goroutines) / float64(n)
}

// benchChild is a child process playing one role of a benchmark.
type benchChild struct {
	role  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	done  bool
}

func startBenchChild(b *testing.B, role string, args ...string) *benchChild {
	b.Helper()
	encoded, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchChild$")
	cmd.Env = append(os.Environ(), benchRoleEnv+"="+role, benchArgsEnv+"="+string(encoded))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &benchChild{role: role, cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	b.Cleanup(func() { c.stop(b) })
	return c
}

// expect reads the child's lines up to the next one it addressed to the benchmark,
// which must start with word, and returns the values after it. The test framework's
// lines (a child's failure) go to stderr.
func (c *benchChild) expect(b *testing.B, word string) []string {
	b.Helper()
	for c.out.Scan() {
		line, ok := strings.CutPrefix(c.out.Text(), benchLinePrefix)
		if !ok {
			fmt.Fprintf(os.Stderr, "[%s] %s\n", c.role, c.out.Text())
			continue
		}
		fields := strings.Fields(line)
		if len(fields) > 0 && fields[0] == word {
			return fields[1:]
		}
		b.Fatalf("%s: %s (expected %q)", c.role, line, word)
	}
	b.Fatalf("%s ended before saying %q", c.role, word)
	return nil
}

// ask sends command and returns the values of the answer that starts with word.
func (c *benchChild) ask(b *testing.B, command, word string) []string {
	b.Helper()
	if _, err := fmt.Fprintln(c.stdin, command); err != nil {
		b.Fatalf("%s: %v", c.role, err)
	}
	return c.expect(b, word)
}

func (c *benchChild) stats(b *testing.B) procStats {
	b.Helper()
	v := c.ask(b, "stats", "stats")
	if len(v) != 3 {
		b.Fatalf("%s: stats %v", c.role, v)
	}
	return procStats{heap: atoi64(b, v[0]), goroutines: int(atoi64(b, v[1])), count: int(atoi64(b, v[2]))}
}

// stop ends the child (its role returns when stdin closes) and waits for it.
func (c *benchChild) stop(b *testing.B) {
	if c.done {
		return
	}
	c.done = true
	_ = c.stdin.Close()
	for c.out.Scan() {
		if strings.HasPrefix(c.out.Text(), "--- FAIL") || strings.HasPrefix(c.out.Text(), "FAIL") {
			fmt.Fprintf(os.Stderr, "[%s] %s\n", c.role, c.out.Text())
		}
	}
	if err := c.cmd.Wait(); err != nil {
		b.Errorf("%s: %v", c.role, err)
	}
}

func atoi64(b *testing.B, s string) int64 {
	b.Helper()
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// benchSetting is the number in environment variable name, or def.
func benchSetting(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil && v > 0 {
		return v
	}
	return def
}

// raiseFDLimit lifts the open-files limit to need, up to the hard limit (beyond it
// when the process may), and skips when that is not enough.
func raiseFDLimit(tb testing.TB, need uint64) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur >= need {
		return
	}
	want := syscall.Rlimit{Cur: need, Max: max(lim.Max, need)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		want = syscall.Rlimit{Cur: lim.Max, Max: lim.Max} // raising the hard limit needs CAP_SYS_RESOURCE
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			tb.Fatal(err)
		}
	}
	if want.Cur < need {
		tb.Skipf("open-files limit %d is below the %d this benchmark needs", want.Cur, need)
	}
}
