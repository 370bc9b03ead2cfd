// Command demo plays selfheal's story on this machine (`make demo`): a local Kubernetes
// control plane (kwok plays the kubelet), the manager as built by `make build`, an MCP
// server that goes down, a question that needs it, and the healing shown live until the
// answer arrives. It keeps running until Ctrl-C so the user can look around with
// kubectl; DEMO_ONCE=1 plays the story once and exits 0 on success.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
	"github.com/selfheal-dev/selfheal/internal/demo/alerts"
	"github.com/selfheal-dev/selfheal/internal/demo/chat"
	"github.com/selfheal-dev/selfheal/internal/demo/stack"
)

const (
	question   = "What security alerts do we have?"
	policyFile = "config/samples/selfheal_v1alpha1_healingpolicy.yaml"
	// logTail is how much of the manager's log a failure shows.
	logTail = 20
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	d := &demo{
		out:    os.Stdout,
		once:   os.Getenv("DEMO_ONCE") != "" && os.Getenv("DEMO_ONCE") != "0",
		apiKey: os.Getenv("ANTHROPIC_API_KEY"),
		seen:   map[string]bool{},
	}
	code := d.run(ctx)
	stop()
	os.Exit(code)
}

type demo struct {
	out    io.Writer
	once   bool
	apiKey string

	root string
	dir  string
	s    *stack.Stack

	mu     sync.Mutex      // serializes the output
	downAt time.Time       // when the MCP server stopped serving: the failure
	seen   map[string]bool // messages already on the timeline
}

// run plays the story and returns the exit code. Everything it starts is stopped
// before it returns.
func (d *demo) run(ctx context.Context) int {
	d.intro()
	err := d.play(ctx)
	interrupted := err != nil && ctx.Err() != nil
	if err != nil && !interrupted {
		// Before stopping, so the log's last lines are about the failure.
		d.fail(err)
	}
	if d.s != nil {
		if err == nil && !d.once {
			d.printf("\nselfheal keeps running. Press Ctrl-C to stop everything.\n")
			<-ctx.Done()
		}
		d.printf("\nStopping selfheal and the local control plane (a few seconds)...\n")
		d.s.Stop()
	}
	switch {
	case err == nil:
		_ = os.RemoveAll(d.dir)
		d.printf("Stopped. Nothing is left running.\n")
		return 0
	case interrupted:
		_ = os.RemoveAll(d.dir)
		d.printf("Interrupted (%v). Nothing is left running.\n", err)
		return 130
	default:
		d.printf("Stopped. The demo FAILED (see above).\n")
		if d.dir != "" {
			d.printf("Files of this run, kept for you: %s\n", d.dir)
		}
		return 1
	}
}

func (d *demo) intro() {
	d.printf(`selfheal demo
=============
selfheal keeps the MCP servers that AI agents call working. Its gateway sits between
your chat app and both Claude and the MCP servers. When a tool call fails because a
server in Kubernetes is down, the gateway holds the call, selfheal diagnoses and heals
the server, and the gateway replays the call: the question still gets its answer.

Everything runs on this machine: a real Kubernetes control plane (etcd, kube-apiserver,
controller-manager, scheduler) where kwok plays the kubelet. Pods are simulated: no
containers run. The MCP server is a local process that follows its Deployment: it
serves while the Deployment has ready pods and stops when it has none.

`)
	if d.apiKey != "" {
		d.printf("Claude: the real Claude API (ANTHROPIC_API_KEY is set).\n\n")
	} else {
		d.printf("Claude: a local, deterministic stand-in (set ANTHROPIC_API_KEY to use the real API).\n\n")
	}
}

func (d *demo) play(ctx context.Context) error {
	var err error
	if d.root, err = controlplane.RepoRoot(); err != nil {
		return err
	}
	if err := d.controlPlaneBinaries(ctx); err != nil {
		return err
	}
	if d.dir, err = os.MkdirTemp("", "selfheal-demo-"); err != nil {
		return err
	}

	d.printf("Starting everything:\n")
	start := time.Now()
	d.s, err = d.start(ctx)
	if err != nil {
		return fmt.Errorf("starting the demo: %w", err)
	}
	d.printf("Everything is up in %s. selfheal's logs: %s\n\n", round(time.Since(start)), d.logPaths())
	d.printf("Watch it in a browser: %s\n", d.s.UIURL())
	d.printf("  log in with the demo's client token, the part after \"chat:\" in %s\n\n", d.s.TokensFile)

	d.printf("Applying the HealingPolicy in %s: selfheal may restart, scale back\n", policyFile)
	d.printf("from zero and clean up failed pods of the Services labelled\n")
	d.printf("selfheal.dev/heal=true in %s.\n", stack.Namespace)
	if err := d.s.ApplyFile(ctx, filepath.Join(d.root, policyFile)); err != nil {
		return fmt.Errorf("applying %s: %w", policyFile, err)
	}

	client := &chat.Client{
		GatewayURL: d.s.GatewayURL,
		Token:      d.s.Token,
		Upstream:   stack.Upstream,
		OnStep:     func(s string) { d.live("chat", s) },
		OnNotice:   d.notice,
	}
	defer func() { _ = client.Close() }()
	// Connected while the server works, so the failure shows up at tools/call, which
	// carries a progress token: the gateway's healing notices arrive on that call.
	if err := client.Connect(ctx); err != nil {
		return err
	}
	d.printf("The chat app is connected to the MCP server %s through the gateway.\n\n", stack.Service)

	evCtx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	ended, err := d.follow(evCtx, client)
	if err != nil {
		return err
	}

	d.printf("Breaking the MCP server, as kubectl scale deployment/%s -n %s --replicas=0 would.\n", stack.Service, stack.Namespace)
	if err := d.s.Scale(ctx, 0); err != nil {
		return fmt.Errorf("scaling %s to zero: %w", stack.Service, err)
	}
	if err := d.s.WaitServing(ctx, false); err != nil {
		return fmt.Errorf("waiting for %s to stop serving: %w", stack.Service, err)
	}
	d.mu.Lock()
	d.downAt = time.Now()
	d.mu.Unlock()
	d.printf("The MCP server is down: no ready pods, and it stopped listening.\n\n")

	d.printf("Asking: %q\n", question)
	d.printf("What happens, live, in seconds since the server went down:\n")
	d.printf("  (chat: the chat app; event: the gateway's healing events stream;\n")
	d.printf("   notice: MCP notifications on the held tool call. A step is shown once.)\n")
	answer, err := client.Ask(ctx, question)
	if err != nil {
		return fmt.Errorf("asking %q: %w", question, err)
	}
	took := time.Since(d.downAt)
	// The events stream is another connection than the answer: let the last healing
	// event reach the timeline before the answer is printed.
	select {
	case <-ended:
	case <-time.After(3 * time.Second):
	}
	stopEvents()

	d.printf("\nAnswer:\n%s\n\n", indent(answer))
	d.printf("Time from the failure to the answer: %s\n\n", round(took))

	if err := checkAnswer(answer); err != nil {
		return err
	}
	if err := d.checkHealed(ctx); err != nil {
		return err
	}
	sum, err := d.s.WaitAnalytics(ctx, 1, 30*time.Second)
	if err != nil {
		return fmt.Errorf("the healing is not in the outcomes of %s's HealingPolicy: %w", stack.Namespace, err)
	}
	d.printf("%s\n  (the charts of %s)\n\n", sum.Line(), d.s.UIURL())
	return d.lookAround(ctx)
}

// start starts the stack. A Ctrl-C meanwhile lets the start finish (seconds) and then
// stops everything: the control plane's start does not clean up after a cancelled
// context yet, and would leave its processes running.
func (d *demo) start(ctx context.Context) (*stack.Stack, error) {
	started := make(chan struct{})
	defer close(started)
	go func() {
		select {
		case <-ctx.Done():
			d.printf("Interrupted: stopping everything as soon as it has started...\n")
		case <-started:
		}
	}()
	s, err := stack.Start(context.WithoutCancel(ctx), stack.Options{Dir: d.dir, Progress: d.out, AnthropicAPIKey: d.apiKey})
	if err == nil && ctx.Err() != nil {
		s.Stop()
		return nil, ctx.Err()
	}
	return s, err
}

// controlPlaneBinaries makes sure the control plane is compiled, saying so (and how long
// it took) when this is the first run.
func (d *demo) controlPlaneBinaries(ctx context.Context) error {
	w := &firstWrite{w: d.out, first: func() {
		d.printf("Compiling the Kubernetes control plane from Go modules. This happens once;\n")
		d.printf("later runs reuse the cache.\n")
	}}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		// The build prints a line per binary, minutes apart: show it is alive.
		tick := time.NewTicker(30 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if w.started() {
					d.printf("  ... still compiling (%s so far)\n", time.Since(start).Round(time.Second))
				}
			}
		}
	}()
	dir, err := controlplane.AssetsDir(ctx, w)
	close(done)
	if err != nil {
		return err
	}
	if w.started() {
		d.printf("Compiled the control plane in %s (cached in %s).\n\n", round(time.Since(start)), dir)
	}
	return nil
}

// follow prints the gateway's healing events for the MCP server (and Claude's
// processing delays, which belong to no service) as they arrive. The returned channel
// closes when a healing ends.
func (d *demo) follow(ctx context.Context, client *chat.Client) (<-chan struct{}, error) {
	// Unfiltered: processing_delay events carry no service; filtered here instead.
	events, err := client.Events(ctx, chat.Filter{})
	if err != nil {
		return nil, fmt.Errorf("subscribing to the healing events: %w", err)
	}
	ended := make(chan struct{})
	go func() {
		var once sync.Once
		for ev := range events {
			terminal := ev.Type == chat.EventHealingComplete || ev.Type == chat.EventHealingFailed
			switch {
			case ev.Type != chat.EventProcessingDelay && ev.Service != stack.Service:
			case ev.Type == chat.EventHealingProgress && terminalPhase(ev.Phase):
				// healing_complete or healing_failed follows and says the same.
			default:
				d.liveOnce("event", describe(ev), ev.Message)
			}
			if terminal {
				once.Do(func() { close(ended) })
			}
		}
	}()
	return ended, nil
}

func terminalPhase(phase string) bool {
	return selfhealv1alpha1.HealingPhase(phase).IsTerminal()
}

// notice prints an MCP notification of the held call, unless a healing event already
// said the same: the gateway relays each healing step on both channels.
func (d *demo) notice(text string) {
	msg := text
	if strings.HasPrefix(msg, "[") {
		phase, rest, ok := strings.Cut(msg[1:], "] ")
		if ok && terminalPhase(phase) {
			return
		}
		if ok {
			msg = rest
		}
	}
	d.liveOnce("notice", msg, msg)
}

// describe says what an event means, in one line.
func describe(ev chat.Event) string {
	msg := strings.TrimSpace(ev.Message)
	switch ev.Type {
	case chat.EventHealingStart:
		return fmt.Sprintf("HealingRequest %s created: %s", ev.Request, msg)
	case chat.EventHealingComplete:
		return "healed: " + msg
	case chat.EventHealingFailed:
		if ev.Reason != "" {
			return fmt.Sprintf("healing failed (%s): %s", ev.Reason, msg)
		}
		return "healing failed: " + msg
	case chat.EventProcessingDelay:
		var delay struct {
			Attempt int   `json:"attempt"`
			WaitMs  int64 `json:"waitMs"`
		}
		_ = json.Unmarshal(ev.Data, &delay)
		return fmt.Sprintf("Claude did not answer (%s): the gateway retries in %s (attempt %d)",
			msg, time.Duration(delay.WaitMs)*time.Millisecond, delay.Attempt)
	default:
		return msg
	}
}

// live prints one line of the timeline, stamped with the time since the failure.
func (d *demo) live(who, what string) { d.liveOnce(who, what, "") }

// liveOnce is live that skips a line whose key (when not empty) was printed before.
func (d *demo) liveOnce(who, what, key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if key != "" {
		key = strings.TrimSpace(key)
		if d.seen[key] {
			return
		}
		d.seen[key] = true
	}
	stamp := "      "
	if !d.downAt.IsZero() {
		stamp = fmt.Sprintf("%5.1fs", time.Since(d.downAt).Seconds())
	}
	_, _ = fmt.Fprintf(d.out, "  %s  %-7s %s\n", stamp, who, what)
}

// checkAnswer makes sure the answer is about the alerts the MCP server holds, so it
// came through the healed tool call.
func checkAnswer(answer string) error {
	list, err := alerts.Alerts("")
	if err != nil {
		return err
	}
	mentions := slices.ContainsFunc(list, func(a alerts.Alert) bool {
		return strings.Contains(answer, a.ID) || strings.Contains(answer, a.Host)
	})
	if !strings.Contains(strings.ToLower(answer), "alert") || !mentions {
		return errors.New("the answer does not mention the security alerts of the MCP server")
	}
	return nil
}

// checkHealed makes sure a HealingRequest for the MCP server ended Healed, and says
// what it did.
func (d *demo) checkHealed(ctx context.Context) error {
	var healed *selfhealv1alpha1.HealingRequest
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := d.s.Requests(ctx)
		if err != nil {
			return false, nil //nolint:nilerr // keep trying through transient errors
		}
		for i := range list {
			if list[i].Status.Phase == selfhealv1alpha1.PhaseHealed {
				healed = &list[i]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("no HealingRequest in %s ended Healed: %w", stack.Namespace, err)
	}
	var did []string
	for _, a := range healed.Status.Actions {
		did = append(did, fmt.Sprintf("%s %s (%s)", a.Type, a.Workload, strings.ToLower(string(a.Outcome))))
	}
	d.printf("HealingRequest %s: %s, issue %s, actions: %s.\n\n",
		healed.Name, healed.Status.Phase, orNone(string(healed.Status.Issue)), orNone(strings.Join(did, ", ")))
	return nil
}

// lookAround shows the HealingRequests and how to inspect the cluster.
func (d *demo) lookAround(ctx context.Context) error {
	out, err := d.s.KubectlRun(ctx, "get", "hr", "-n", stack.Namespace)
	if err != nil {
		return err
	}
	d.printf("$ kubectl get hr -n %s\n%s\n", stack.Namespace, out)
	k := d.s.Kubectl + " --kubeconfig " + d.s.Kubeconfig
	if d.once {
		d.printf("Without DEMO_ONCE, the demo keeps running so you can look around:\n")
	} else {
		d.printf("Look around from another terminal (copy and paste):\n")
	}
	d.printf("  kubectl:    %s\n  kubeconfig: %s\n\n", d.s.Kubectl, d.s.Kubeconfig)
	for _, args := range []string{"get hr", "describe hr", "get deployments,pods"} {
		d.printf("  %s %s -n %s\n", k, args, stack.Namespace)
	}
	d.printf("\n")
	d.printf("selfheal's logs: %s\n", d.logPaths())
	return nil
}

// fail explains a failure, with the end of the manager's log.
func (d *demo) fail(err error) {
	d.printf("\nFAILED: %v\n", err)
	if d.apiKey != "" && strings.Contains(err.Error(), "Claude") {
		d.printf("(The real Claude API was used: check ANTHROPIC_API_KEY and the network, or unset it.)\n")
	}
	if d.dir == "" {
		return
	}
	for _, name := range []string{"controller-1", "controller-2", "gateway"} {
		path := filepath.Join(d.dir, name+".log")
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > logTail {
			lines = lines[len(lines)-logTail:]
		}
		d.printf("The %s's log: %s\nIts last %d lines:\n", name, path, len(lines))
		for _, l := range lines {
			d.printf("  %s\n", l)
		}
	}
}

// logPaths names the logs of selfheal's two processes (the stack writes them).
func (d *demo) logPaths() string {
	return filepath.Join(d.dir, "controller-*.log") + ", " + filepath.Join(d.dir, "gateway.log")
}

func (d *demo) printf(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, _ = fmt.Fprintf(d.out, format, args...)
}

// firstWrite forwards to w and calls first before the first write.
type firstWrite struct {
	w     io.Writer
	first func()
	wrote atomic.Bool
}

func (f *firstWrite) Write(p []byte) (int, error) {
	if !f.wrote.Swap(true) {
		f.first()
	}
	return f.w.Write(p)
}

func (f *firstWrite) started() bool { return f.wrote.Load() }

func indent(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}

func round(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
