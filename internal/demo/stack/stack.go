// Package stack starts the whole selfheal story on one machine, for the demo and the
// e2e suite: the local control plane (kwok plays the kubelet), selfheal installed from
// `kustomize build config/default` as users install it (CRDs, the two identities and
// their RBAC, the admission policy, both Deployments), the manager binary run twice
// under the identities those manifests create (the controller, and the gateway
// alone), the namespace opted in to remediation by the sample RoleBinding, the example MCP
// server deployed as sandfly-mcp-server in cortex-system (a local process that follows
// the Deployment), and a fake Anthropic upstream (or the real API).
package stack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
	"github.com/selfheal-dev/selfheal/internal/demo/alerts"
	"github.com/selfheal-dev/selfheal/internal/demo/fakeclaude"
	"github.com/selfheal-dev/selfheal/internal/demo/follow"
)

// The cast's names, as in the seed's story.
const (
	Namespace        = "cortex-system"
	Service          = "sandfly-mcp-server"
	Upstream         = "sandfly"
	ManagerNamespace = "selfheal-system"
	ControllerSA     = "selfheal-controller"
	GatewaySA        = "selfheal-gateway"
)

// Options configure Start.
type Options struct {
	// Dir holds kubeconfigs, logs and the gateway config; a temporary one when empty.
	Dir string
	// Progress receives what happens, in plain words; nil discards it.
	Progress io.Writer
	// ManagerBinary defaults to bin/manager (make build).
	ManagerBinary string
	// AnthropicAPIKey, when set, makes the gateway use the real Claude API instead of
	// the fake upstream.
	AnthropicAPIKey string
	// CallTimeout is the gateway's per-call timeout for the MCP upstream (default 3s).
	CallTimeout time.Duration
}

// Stack is the running story.
type Stack struct {
	Cluster *controlplane.ControlPlane
	Client  client.Client
	Alerts  *alerts.Server
	// Claude is the fake Anthropic upstream; nil when the real API is used.
	Claude *fakeclaude.Server
	// GatewayURL is the gateway process's address (with /healthz, /readyz);
	// GatewayMetricsURL its metrics. ProbeURL and MetricsURL are the controller's.
	GatewayURL, GatewayMetricsURL, ProbeURL, MetricsURL string
	// SecondGatewayURL is another gateway replica: same config, same session key.
	SecondGatewayURL string
	// Token is a client token the gateway accepts.
	Token string
	// TokensFile holds it ("chat:<token>"): where a person finds it to log in to /ui.
	TokensFile string
	// Kubeconfig is an administrator kubeconfig for kubectl.
	Kubeconfig string
	// Kubectl is the kubectl binary built with the control plane.
	Kubectl string
	Dir     string

	progress      io.Writer
	processes     []*process
	controllers   int
	managerBinary string
	cancel        context.CancelFunc
	followDone    chan struct{}
	gateways      []*gatewayReplica
}

// Start brings everything up; on error what was started is stopped.
func Start(ctx context.Context, o Options) (s *Stack, err error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.ManagerBinary == "" {
		o.ManagerBinary = filepath.Join(root, "bin", "manager")
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = 3 * time.Second
	}
	if _, err := os.Stat(o.ManagerBinary); err != nil {
		return nil, fmt.Errorf("manager binary %s: %w (run make build)", o.ManagerBinary, err)
	}
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "selfheal-demo-"); err != nil {
			return nil, err
		}
	}
	started := &Stack{Dir: o.Dir, progress: o.Progress}
	s = started
	defer func() {
		if err != nil {
			// Every error return has set s to nil already: stop what was started.
			started.Stop()
			s = nil
		}
	}()

	s.say("Starting the local Kubernetes control plane (kwok plays the kubelet: pods are simulated, everything else is real)")
	if s.Cluster, err = controlplane.Start(ctx, controlplane.Options{Cluster: true, Dir: filepath.Join(o.Dir, "cluster"), Progress: o.Progress}); err != nil {
		return nil, err
	}
	s.Client, s.Kubeconfig = s.Cluster.Client, s.Cluster.Kubeconfig
	assets, err := controlplane.AssetsDir(ctx, nil)
	if err != nil {
		return nil, err
	}
	s.Kubectl = filepath.Join(assets, "kubectl")

	s.say("Installing selfheal from config/default (kustomize), server-side, as users do")
	if err := s.Cluster.Install(ctx, "config/default", nil); err != nil {
		return nil, err
	}
	s.say("Deploying the MCP server %s in namespace %s, opted in to remediation by config/samples", Service, Namespace)
	if err := s.deployMCPServer(ctx); err != nil {
		return nil, err
	}
	if err := s.ApplyFile(ctx, filepath.Join(root, "config", "samples", "remediation_rolebinding.yaml")); err != nil {
		return nil, fmt.Errorf("opting %s in: %w", Namespace, err)
	}
	if s.Alerts, err = alerts.Start(alerts.Options{}); err != nil {
		return nil, err
	}
	followCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	watcher, err := client.NewWithWatch(s.Cluster.Config, client.Options{Scheme: controlplane.Scheme()})
	if err != nil {
		return nil, err
	}
	s.followDone = make(chan struct{})
	go func() {
		defer close(s.followDone)
		if err := follow.Follow(followCtx, watcher, Namespace, Service, s.Alerts); err != nil {
			_, _ = fmt.Fprintf(o.Progress, "follow: %v\n", err)
		}
	}()
	if err := s.WaitServing(ctx, true); err != nil {
		return nil, err
	}

	apiKey, baseURL := o.AnthropicAPIKey, ""
	if apiKey == "" {
		apiKey = "sk-ant-demo-" + randomHex(12)
		if s.Claude, err = fakeclaude.Start(fakeclaude.Options{APIKey: apiKey}); err != nil {
			return nil, err
		}
		baseURL = s.Claude.URL()
	}
	s.Token = "demo-" + randomHex(16)
	if err := s.startManager(ctx, o, apiKey, baseURL); err != nil {
		return nil, err
	}
	return s, nil
}

// Stop ends everything Start started, selfheal's processes first.
func (s *Stack) Stop() {
	for _, p := range s.processes {
		p.stop()
	}
	if s.cancel != nil {
		s.cancel()
		<-s.followDone
	}
	if s.Alerts != nil {
		_ = s.Alerts.Close()
	}
	if s.Claude != nil {
		_ = s.Claude.Close()
	}
	if s.Cluster != nil {
		_ = s.Cluster.Stop()
	}
}

func (s *Stack) say(format string, args ...any) {
	_, _ = fmt.Fprintf(s.progress, "==> "+format+"\n", args...)
}

// ApplyFile creates every object of a (multi-document) YAML file.
func (s *Stack) ApplyFile(ctx context.Context, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if len(obj.Object) == 0 {
			continue
		}
		if err := s.create(ctx, obj); err != nil {
			return err
		}
	}
}

func (s *Stack) create(ctx context.Context, obj client.Object) error {
	if err := s.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// mcpServerDeployment is the MCP server's Deployment as Start creates it: the baseline
// ResetMCPServer returns to. The strategy is spelled out as the API server defaults it.
func mcpServerDeployment() *appsv1.Deployment {
	quarter := intstr.FromString("25%")
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: Service},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": Service}},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &quarter, MaxSurge: &quarter}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": Service}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "server", Image: "ghcr.io/sandfly/security-alerts-mcp:2.4.1",
					Ports: []corev1.ContainerPort{{Name: "mcp", ContainerPort: 8080}},
					Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
						corev1.ResourceMemory: resource.MustParse("256Mi"), corev1.ResourceCPU: resource.MustParse("500m"),
					}},
				}}},
			},
		},
	}
}

func (s *Stack) deployMCPServer(ctx context.Context) error {
	labels := map[string]string{"app": Service}
	if err := s.create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil {
		return err
	}
	dep := mcpServerDeployment()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: Service, Labels: map[string]string{"selfheal.dev/heal": "true"}},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "mcp", Port: 80, TargetPort: intstr.FromString("mcp")}},
		},
	}
	if err := s.create(ctx, dep); err != nil {
		return err
	}
	return s.create(ctx, svc)
}

// WaitServing waits until the local MCP server follows the Deployment into the given
// state.
func (s *Stack) WaitServing(ctx context.Context, serving bool) error {
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		return s.Alerts.Serving() == serving, nil
	})
}

func (s *Stack) startManager(ctx context.Context, o Options, apiKey, baseURL string) error {
	ports, err := freePorts(ctx, 4)
	if err != nil {
		return err
	}
	gw, gwMetrics, gw2, gw2Metrics := ports[0], ports[1], ports[2], ports[3]
	// Both gateway replicas seal MCP sessions with one key, as a Secret mounted in
	// every pod would give them.
	sessionKey := filepath.Join(s.Dir, "gateway-session", "key")
	if err := os.MkdirAll(filepath.Dir(sessionKey), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(sessionKey, []byte(base64.StdEncoding.EncodeToString(randomBytes(32))+"\n"), 0o600); err != nil {
		return err
	}
	// The gateway watches the tokens file's directory: alone in its own, so that writes
	// to the logs (in Dir) do not make it reload and log, in a loop.
	tokens := filepath.Join(s.Dir, "gateway", "tokens")
	if err := os.MkdirAll(filepath.Dir(tokens), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(tokens, []byte("# demo client\nchat:"+s.Token+"\n"), 0o600); err != nil {
		return err
	}
	s.TokensFile = tokens
	anthropic := "  apiKey:\n    env: SELFHEAL_ANTHROPIC_API_KEY\n"
	if baseURL != "" {
		anthropic = "  baseURL: " + baseURL + "\n" + anthropic
	}
	// replay: always — get_security_alerts only reads, so a call the upstream may have
	// received (a timeout) is safe to replay after healing.
	cfg := fmt.Sprintf(`anthropic:
%s  maxRetries: 2
auth:
  tokensFile: %s
upstreams:
- name: %s
  url: %s
  namespace: %s
  service: %s
  callTimeout: %s
  replay: always
healing:
  namespace: %s
sessions:
  keyFile: %s
`, anthropic, tokens, Upstream, s.Alerts.URL(), Namespace, Service, o.CallTimeout, Namespace, sessionKey)
	cfgPath := filepath.Join(s.Dir, "gateway.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}

	s.say("Starting selfheal's controller as ServiceAccount %s/%s and its gateway as %s/%s, with the RBAC from config/default",
		ManagerNamespace, ControllerSA, ManagerNamespace, GatewaySA)
	// Two controllers with leader election, as config/default deploys them: the first
	// leads (it is waited for before the second starts), the other stands by.
	s.managerBinary = o.ManagerBinary
	for range 2 {
		if _, err := s.StartController(ctx); err != nil {
			return err
		}
	}
	// Two gateway replicas, as config/default deploys them; the demo talks to the first.
	for i, addr := range [][2]string{{gw, gwMetrics}, {gw2, gw2Metrics}} {
		g := &gatewayReplica{name: "gateway", url: "http://" + addr[0], env: []string{"SELFHEAL_ANTHROPIC_API_KEY=" + apiKey},
			args: []string{"--enable-controllers=false", "--metrics-bind-address=" + addr[1], "--metrics-secure=false",
				"--gateway-config=" + cfgPath, "--gateway-bind-address=" + addr[0], "--zap-log-level=info"}}
		if i > 0 {
			g.name = fmt.Sprintf("gateway-%d", i+1)
		}
		if err := s.startGateway(g); err != nil {
			return err
		}
		s.gateways = append(s.gateways, g)
	}
	s.GatewayURL, s.GatewayMetricsURL, s.SecondGatewayURL = "http://"+gw, "http://"+gwMetrics, "http://"+gw2
	leader := s.leader()
	s.ProbeURL, s.MetricsURL = leader.probeURL, leader.metricsURL
	return s.waitGateways(ctx, s.gateways...)
}

// Lease timing of the stack's controllers: short, so a killed leader is replaced
// within seconds (the Deployments keep the defaults: 15 s, 10 s, 2 s).
const (
	leaseDuration = 3 * time.Second
	renewDeadline = 2 * time.Second
	retryPeriod   = 500 * time.Millisecond
)

// StartController starts one more controller process (leader-elected, plain-HTTP
// metrics so the suite scrapes without a token) and waits until it is ready; when no
// other controller leads, it waits until this one leads.
func (s *Stack) StartController(ctx context.Context) (string, error) {
	ports, err := freePorts(ctx, 2)
	if err != nil {
		return "", err
	}
	s.controllers++
	name := fmt.Sprintf("controller-%d", s.controllers)
	p, err := s.startProcess(s.managerBinary, name, ControllerSA, nil,
		"--metrics-bind-address="+ports[0], "--metrics-secure=false", "--health-probe-bind-address="+ports[1],
		"--leader-elect", "--leader-election-namespace="+ManagerNamespace,
		"--leader-elect-lease-duration="+leaseDuration.String(), "--leader-elect-renew-deadline="+renewDeadline.String(),
		"--leader-elect-retry-period="+retryPeriod.String(),
		"--caller-namespace="+ManagerNamespace, "--zap-log-level=info")
	if err != nil {
		return "", err
	}
	p.metricsURL, p.probeURL, p.controller = "http://"+ports[0], "http://"+ports[1], true
	lead := s.leader() == nil
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("%s exited; see %s", name, p.logPath)
		}
		return httpOK(p.probeURL+"/readyz") && (!lead || p.leads()), nil
	})
	if err != nil {
		return "", fmt.Errorf("waiting for %s: %w (log: %s)", name, err, p.logPath)
	}
	return name, nil
}

// leader is the controller process that holds the lease, nil when none does. A
// process acquires the lease at most once in its life (it exits when it loses it), so
// the running one whose log says it acquired it leads.
func (s *Stack) leader() *process {
	for _, p := range s.processes {
		if p.controller && !p.exited() && p.leads() {
			return p
		}
	}
	return nil
}

// KillLeader SIGKILLs the leading controller, as a node failure would: no lease
// release, no graceful shutdown. It returns the killed process's name.
func (s *Stack) KillLeader() (string, error) {
	p := s.leader()
	if p == nil {
		return "", errors.New("no controller leads")
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return p.name, nil
}

// WaitLeader waits until a running controller leads and returns its name.
func (s *Stack) WaitLeader(ctx context.Context) (string, error) {
	var name string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		if p := s.leader(); p != nil {
			name = p.name
			return true, nil
		}
		return false, nil
	})
	return name, err
}

func (p *process) leads() bool {
	b, _ := os.ReadFile(p.logPath)
	return strings.Contains(strings.ToLower(string(b)), "successfully acquired lease")
}

// process is one selfheal process of the stack.
type process struct {
	name, logPath string
	cmd           *exec.Cmd
	done          chan struct{}
	// controller processes: their endpoints.
	controller           bool
	metricsURL, probeURL string
}

// startProcess runs the manager binary authenticated as ServiceAccount sa (a client
// certificate for that user: RBAC and the admission policy apply as to a pod's token),
// logging to Dir/name.log.
func (s *Stack) startProcess(bin, name, sa string, env []string, args ...string) (*process, error) {
	kubeconfig, err := s.Cluster.WriteKubeconfig(controlplane.ServiceAccountUser(ManagerNamespace, sa), controlplane.ServiceAccountGroups(ManagerNamespace))
	if err != nil {
		return nil, err
	}
	p := &process{name: name, logPath: filepath.Join(s.Dir, name+".log"), done: make(chan struct{})}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	// No context: the process outlives Start's ctx; Stop ends it.
	p.cmd = exec.Command(bin, args...) //nolint:gosec,noctx // our own binary
	p.cmd.Env = append(append(os.Environ(), "KUBECONFIG="+kubeconfig), env...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, err
	}
	s.processes = append(s.processes, p)
	go func() {
		_ = p.cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process gracefully, or kills it after 15 s.
func (p *process) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// ManagerLog is the output of selfheal's processes so far.
func (s *Stack) ManagerLog() string {
	var out strings.Builder
	for _, p := range s.processes {
		b, _ := os.ReadFile(p.logPath)
		fmt.Fprintf(&out, "--- %s (%s)\n%s", p.name, p.logPath, b)
	}
	return out.String()
}

// Kubectl runs kubectl with the administrator kubeconfig and returns its output.
func (s *Stack) KubectlRun(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, s.Kubectl, append([]string{"--kubeconfig", s.Kubeconfig}, args...)...) //nolint:gosec
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ApplyPolicy creates (or replaces) a HealingPolicy.
func (s *Stack) ApplyPolicy(ctx context.Context, p *selfhealv1alpha1.HealingPolicy) error {
	existing := &selfhealv1alpha1.HealingPolicy{}
	if err := s.Client.Get(ctx, client.ObjectKeyFromObject(p), existing); err == nil {
		if err := s.Client.Delete(ctx, existing); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return s.Client.Create(ctx, p)
}

func httpOK(url string) bool {
	resp, err := http.Get(url) //nolint:gosec,noctx // loopback probe
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func freePorts(ctx context.Context, n int) ([]string, error) {
	var addrs []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

func randomHex(n int) string { return hex.EncodeToString(randomBytes(n)) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// Scale sets the MCP server Deployment's replicas, as kubectl scale would.
func (s *Stack) Scale(ctx context.Context, replicas int32) error {
	dep := &appsv1.Deployment{}
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: Service}, dep); err != nil {
		return err
	}
	patch := client.MergeFrom(dep.DeepCopy())
	dep.Spec.Replicas = ptr.To(replicas)
	return s.Client.Patch(ctx, dep, patch)
}

// Deployment reads the MCP server Deployment.
func (s *Stack) Deployment(ctx context.Context) (*appsv1.Deployment, error) {
	dep := &appsv1.Deployment{}
	return dep, s.Client.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: Service}, dep)
}

// WaitHealthy waits until the Deployment's rollout is complete with every replica
// available and the local MCP server serves.
func (s *Stack) WaitHealthy(ctx context.Context) error {
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		dep, err := s.Deployment(ctx)
		if err != nil {
			return false, nil //nolint:nilerr // keep waiting through transient errors
		}
		want := ptr.Deref(dep.Spec.Replicas, 1)
		return want > 0 && dep.Status.ObservedGeneration >= dep.Generation && dep.Status.UpdatedReplicas == want &&
			dep.Status.AvailableReplicas == want && dep.Status.Replicas == want, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %s to be healthy: %w", Service, err)
	}
	return s.WaitServing(ctx, true)
}

// Pods lists the MCP server's pods that are not terminating.
func (s *Stack) Pods(ctx context.Context) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := s.Client.List(ctx, &list, client.InNamespace(Namespace), client.MatchingLabels{"app": Service}); err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// Requests lists the HealingRequests in the MCP server's namespace.
func (s *Stack) Requests(ctx context.Context) ([]selfhealv1alpha1.HealingRequest, error) {
	var list selfhealv1alpha1.HealingRequestList
	err := s.Client.List(ctx, &list, client.InNamespace(Namespace))
	return list.Items, err
}
