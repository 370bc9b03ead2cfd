// Package controlplane runs a real, local Kubernetes control plane built from Go modules:
// etcd and kube-apiserver through envtest, and optionally kube-controller-manager,
// kube-scheduler and kwok, which plays the kubelet of one fake node. Tests, the e2e
// suite and the demo share it. Nothing here is a fake API: pods are scheduled by the
// real scheduler, owned by real ReplicaSets, and published in real EndpointSlices;
// only the kubelet's container runtime is simulated, by kwok stages (stages/*.yaml).
package controlplane

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

//go:embed stages/*.yaml
var stagesFS embed.FS

// NodeName is the name of the one fake node kwok manages.
const NodeName = "kwok-node-0"

// podCIDR is kwok's pod address range; it must not overlap serviceCIDR.
const (
	podCIDR     = "10.244.0.0/16"
	serviceCIDR = "10.96.0.0/16"
)

// Options configure Start.
type Options struct {
	// CRDDirectoryPaths are installed before Start returns. Defaults to the
	// repository's config/crd/bases.
	CRDDirectoryPaths []string
	// Cluster also starts kube-controller-manager, kube-scheduler and kwok with one
	// node, so workloads get pods that become Running and Ready.
	Cluster bool
	// Dir holds kubeconfigs, component logs and pod log files. A temporary directory
	// is used (and removed by Stop) when empty.
	Dir string
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
}

// ControlPlane is a running local control plane.
type ControlPlane struct {
	// Config authenticates as a cluster administrator.
	Config *rest.Config
	// Client is an uncached client for Config, with the selfheal and core schemes.
	Client client.Client
	// Kubeconfig is the path of an administrator kubeconfig file.
	Kubeconfig string
	// Dir holds kubeconfigs, component logs (*.log) and pod log files.
	Dir string

	env        *envtest.Environment
	ownDir     bool
	procs      []*process
	progress   io.Writer
	kubeletURL string
}

// Start starts the control plane. On error, whatever was started is stopped.
func Start(ctx context.Context, opts Options) (cp *ControlPlane, err error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	assets, err := AssetsDir(ctx, opts.Progress)
	if err != nil {
		return nil, err
	}
	cp = &ControlPlane{Dir: opts.Dir, progress: opts.Progress}
	if cp.progress == nil {
		cp.progress = io.Discard
	}
	if cp.Dir == "" {
		if cp.Dir, err = os.MkdirTemp("", "selfheal-controlplane-"); err != nil {
			return nil, err
		}
		cp.ownDir = true
	} else if err := os.MkdirAll(cp.Dir, 0o750); err != nil {
		return nil, err
	}
	started := cp // the named result is nil by the time a failed return runs the defer
	defer func() {
		if err != nil {
			_ = started.Stop()
		}
	}()

	crds := opts.CRDDirectoryPaths
	if len(crds) == 0 {
		crds = []string{filepath.Join(root, "config", "crd", "bases")}
	}
	cp.env = &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     crds,
		CRDs:                  kwokCRDs(),
		ErrorIfCRDPathMissing: true,
	}
	// A /16 of Service IPs (envtest's default /24 holds 254 Services; the scale
	// benchmark creates 1,000). It does not overlap podCIDR.
	cp.env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", serviceCIDR)
	cp.logf("starting etcd and kube-apiserver")
	if cp.Config, err = cp.env.Start(); err != nil {
		return nil, fmt.Errorf("starting kube-apiserver and etcd: %w", err)
	}
	// The apiserver serves many clients in tests (manager, kwok, controllers); the
	// client-go default of 5 QPS would make the tests measure the rate limiter.
	cp.Config.QPS, cp.Config.Burst = 200, 400
	if cp.Client, err = client.New(cp.Config, client.Options{Scheme: Scheme()}); err != nil {
		return nil, err
	}
	if cp.Kubeconfig, err = cp.WriteKubeconfig("admin", []string{"system:masters"}); err != nil {
		return nil, err
	}
	if !opts.Cluster {
		return cp, nil
	}

	cp.logf("starting kube-controller-manager and kube-scheduler")
	if err := cp.run("kube-controller-manager", filepath.Join(assets, "kube-controller-manager"),
		"--kubeconfig="+cp.Kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--controllers=*,-nodeipam,-serviceaccount-token",
		// Sync fast: the tests and the demo wait on rollouts.
		"--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
		"--concurrent-service-endpoint-syncs=10",
		"--endpointslice-updates-batch-period=0s",
	); err != nil {
		return nil, err
	}
	if err := cp.run("kube-scheduler", filepath.Join(assets, "kube-scheduler"),
		"--kubeconfig="+cp.Kubeconfig, "--leader-elect=false", "--secure-port=0",
	); err != nil {
		return nil, err
	}

	stages := filepath.Join(cp.Dir, "kwok-stages.yaml")
	if err := writeStages(stages); err != nil {
		return nil, err
	}
	port, err := freePort(ctx)
	if err != nil {
		return nil, err
	}
	cp.kubeletURL = fmt.Sprintf("127.0.0.1:%d", port)
	cp.logf("starting kwok (plays the kubelet of node %s)", NodeName)
	if err := cp.run("kwok", filepath.Join(assets, "kwok"),
		"--kubeconfig="+cp.Kubeconfig,
		"--config="+stages,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--cidr="+podCIDR,
		"--node-ip=127.0.0.1",
		"--node-port="+strconv.Itoa(port),
		"--server-address="+cp.kubeletURL,
		"--node-lease-duration-seconds=40",
		"--enable-crds=Logs,ClusterLogs",
	); err != nil {
		return nil, err
	}
	if err := cp.createNode(ctx); err != nil {
		return nil, err
	}
	cp.logf("control plane ready (kubeconfig %s)", cp.Kubeconfig)
	return cp, nil
}

// Stop stops every component, in reverse order of start, and removes the temporary
// directory if Start created it.
func (cp *ControlPlane) Stop() error {
	var errs []error
	for i := len(cp.procs) - 1; i >= 0; i-- {
		stopProcess(cp.procs[i])
	}
	cp.procs = nil
	if cp.env != nil {
		errs = append(errs, cp.env.Stop())
		cp.env = nil
	}
	if cp.ownDir {
		errs = append(errs, os.RemoveAll(cp.Dir))
	}
	return errors.Join(errs...)
}

// AddUser returns a rest.Config that authenticates as the named user and groups, with
// a client certificate signed by the apiserver's CA: the apiserver's authorizers (RBAC)
// apply to it exactly as to a real ServiceAccount of that name.
func (cp *ControlPlane) AddUser(name string, groups []string) (*rest.Config, error) {
	u, err := cp.env.ControlPlane.AddUser(envtest.User{Name: name, Groups: groups}, cp.Config)
	if err != nil {
		return nil, fmt.Errorf("adding user %s: %w", name, err)
	}
	cfg := u.Config()
	cfg.QPS, cfg.Burst = cp.Config.QPS, cp.Config.Burst
	return cfg, nil
}

// WriteKubeconfig writes a kubeconfig for a user (see AddUser) into Dir and returns its
// path.
func (cp *ControlPlane) WriteKubeconfig(name string, groups []string) (string, error) {
	u, err := cp.env.ControlPlane.AddUser(envtest.User{Name: name, Groups: groups}, cp.Config)
	if err != nil {
		return "", fmt.Errorf("adding user %s: %w", name, err)
	}
	data, err := u.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(cp.Dir, strings.NewReplacer(":", "_", "/", "_").Replace(name)+".kubeconfig")
	return path, os.WriteFile(path, data, 0o600)
}

// ServiceAccountUser is the user name the apiserver gives a ServiceAccount.
func ServiceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// ServiceAccountGroups are the groups the apiserver gives a ServiceAccount's tokens.
func ServiceAccountGroups(namespace string) []string {
	return []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
}

func (cp *ControlPlane) logf(format string, args ...any) {
	_, _ = fmt.Fprintf(cp.progress, "[controlplane] "+format+"\n", args...)
}

// run starts a component with its output in Dir/<name>.log, in its own process group so
// Stop ends its children too.
func (cp *ControlPlane) run(name, bin string, args ...string) error {
	logFile, err := os.Create(filepath.Join(cp.Dir, name+".log"))
	if err != nil {
		return err
	}
	// No context: the component outlives Start's ctx; Stop ends it (SIGTERM, then SIGKILL).
	cmd := exec.Command(bin, args...) //nolint:gosec,noctx // binaries from our own cache
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	cp.procs = append(cp.procs, p)
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return nil
}

// process is a started component; done closes when it has exited.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// stopProcess asks the component's process group to terminate and kills it if it has
// not exited within 5 seconds.
func stopProcess(p *process) {
	pgid := -p.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(5 * time.Second):
	}
	_ = syscall.Kill(pgid, syscall.SIGKILL)
	<-p.done
}

// createNode registers the fake node and waits until kwok reports it Ready.
func (cp *ControlPlane) createNode(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        NodeName,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels: map[string]string{
				"kubernetes.io/hostname": NodeName, "kubernetes.io/os": "linux",
				"kubernetes.io/arch": "amd64", "type": "kwok",
			},
		},
	}
	if err := cp.Client.Create(ctx, node); err != nil {
		return fmt.Errorf("creating node: %w", err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := cp.Client.Get(ctx, client.ObjectKeyFromObject(node), node); err != nil {
			return false, nil //nolint:nilerr // keep waiting through transient errors
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("node %s did not become Ready (see %s): %w", NodeName, filepath.Join(cp.Dir, "kwok.log"), err)
	}
	return nil
}

func writeStages(path string) error {
	entries, err := stagesFS.ReadDir("stages")
	if err != nil {
		return err
	}
	var docs []string
	for _, e := range entries {
		b, err := stagesFS.ReadFile("stages/" + e.Name())
		if err != nil {
			return err
		}
		docs = append(docs, string(b))
	}
	return os.WriteFile(path, []byte(strings.Join(docs, "\n---\n")), 0o600)
}

func freePort(ctx context.Context) (int, error) {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RepoRoot is the directory that holds go.mod of this repository.
func RepoRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		dir := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(dir, "hack", "controlplane.sh")); err == nil {
			return filepath.Abs(dir)
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "controlplane.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the selfheal repository (hack/controlplane.sh) above the working directory")
		}
		dir = parent
	}
}

// AssetsDir returns the directory with the control plane binaries: KUBEBUILDER_ASSETS
// when it holds them, else the cache that hack/controlplane.sh fills (building it the
// first time, which takes minutes; its progress goes to progress).
func AssetsDir(ctx context.Context, progress io.Writer) (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "kwok")); err == nil {
			return dir, nil
		}
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "controlplane.sh"))
	cmd.Dir = root
	if progress != nil {
		cmd.Stderr = progress
	}
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building the control plane (hack/controlplane.sh): %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// kwokCRDs are the kwok APIs the tests use besides stages: Logs and ClusterLogs point
// kwok's kubelet server at log files, so pods/log works. Their schemas are left open;
// kwok validates what it reads.
func kwokCRDs() []*apiextensionsv1.CustomResourceDefinition {
	crd := func(kind, plural string, scope apiextensionsv1.ResourceScope) *apiextensionsv1.CustomResourceDefinition {
		gr := schema.GroupResource{Group: "kwok.x-k8s.io", Resource: plural}
		preserve := true
		return &apiextensionsv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: gr.String()},
			Spec: apiextensionsv1.CustomResourceDefinitionSpec{
				Group: gr.Group,
				Names: apiextensionsv1.CustomResourceDefinitionNames{
					Kind: kind, ListKind: kind + "List", Plural: plural, Singular: strings.ToLower(kind),
				},
				Scope: scope,
				Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
					Name: "v1alpha1", Served: true, Storage: true,
					Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
					Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
						Type: "object", XPreserveUnknownFields: &preserve,
					}},
				}},
			},
		}
	}
	return []*apiextensionsv1.CustomResourceDefinition{
		crd("Logs", "logs", apiextensionsv1.NamespaceScoped),
		crd("ClusterLogs", "clusterlogs", apiextensionsv1.ClusterScoped),
	}
}
