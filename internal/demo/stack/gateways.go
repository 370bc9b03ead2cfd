package stack

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// gatewayReplica is one gateway process of the stack, and how to start it again: the
// same address, config and session key, as a restarted pod of the Deployment would have.
type gatewayReplica struct {
	name, url string
	env, args []string
	starts    int
	proc      *process
}

// startGateway starts the replica's process; a restart logs to its own file
// (gateway.1.log, ...), so the earlier run's log is kept.
func (s *Stack) startGateway(g *gatewayReplica) error {
	name := g.name
	if g.starts > 0 {
		name = fmt.Sprintf("%s.%d", g.name, g.starts)
	}
	p, err := s.startProcess(s.managerBinary, name, GatewaySA, g.env, g.args...)
	if err != nil {
		return err
	}
	g.starts++
	g.proc = p
	return nil
}

// waitGateways waits until the replicas answer /readyz, as a readiness probe would.
func (s *Stack) waitGateways(ctx context.Context, gws ...*gatewayReplica) error {
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		for _, g := range gws {
			if g.proc.exited() {
				return false, fmt.Errorf("%s exited; see %s", g.proc.name, g.proc.logPath)
			}
		}
		for _, g := range gws {
			if !httpOK(g.url + "/readyz") {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the gateways: %w (logs in %s)", err, s.Dir)
	}
	return nil
}

// gateway is replica i: 0 serves GatewayURL, 1 SecondGatewayURL.
func (s *Stack) gateway(i int) (*gatewayReplica, error) {
	if i < 0 || i >= len(s.gateways) {
		return nil, fmt.Errorf("no gateway replica %d: the stack runs %d", i, len(s.gateways))
	}
	return s.gateways[i], nil
}

// StopGateway ends gateway replica i (0 serves GatewayURL, 1 SecondGatewayURL) with
// sig and returns once the process has exited: SIGTERM is a rolling update's stop
// (event streams get their final event, in-flight calls drain for up to 10 s), SIGKILL
// a crash (connections just break).
func (s *Stack) StopGateway(i int, sig syscall.Signal) error {
	g, err := s.gateway(i)
	if err != nil {
		return err
	}
	if g.proc.exited() {
		return fmt.Errorf("%s is not running", g.proc.name)
	}
	if err := g.proc.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signalling %s: %w", g.proc.name, err)
	}
	select {
	case <-g.proc.done:
		return nil
	case <-time.After(30 * time.Second):
		_ = g.proc.cmd.Process.Kill()
		<-g.proc.done
		return fmt.Errorf("%s did not exit within 30s of %s; killed", g.proc.name, sig)
	}
}

// StartGateway starts gateway replica i again, on its address with its config and
// session key, and waits until it is ready.
func (s *Stack) StartGateway(ctx context.Context, i int) error {
	g, err := s.gateway(i)
	if err != nil {
		return err
	}
	if !g.proc.exited() {
		return fmt.Errorf("%s is still running", g.proc.name)
	}
	if err := s.startGateway(g); err != nil {
		return err
	}
	return s.waitGateways(ctx, g)
}
