package follow_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/selfheal-dev/selfheal/internal/controlplane"
	"github.com/selfheal-dev/selfheal/internal/demo/alerts"
	"github.com/selfheal-dev/selfheal/internal/demo/follow"
)

var cluster *controlplane.ControlPlane

func TestMain(m *testing.M) {
	// Generous: the suite runs beside other builds, where gomega's 1 s default flakes.
	SetDefaultEventuallyTimeout(30 * time.Second)
	var err error
	cluster, err = controlplane.Start(context.Background(), controlplane.Options{Cluster: true, Progress: os.Stderr})
	if err != nil {
		_, _ = io.WriteString(os.Stderr, "starting the control plane: "+err.Error()+"\n")
		os.Exit(1)
	}
	code := m.Run()
	if err := cluster.Stop(); err != nil {
		_, _ = io.WriteString(os.Stderr, "stopping the control plane: "+err.Error()+"\n")
	}
	os.Exit(code)
}

const name = "sandfly-mcp-server"

func workload(ns string, replicas int32) (*appsv1.Deployment, *corev1.Service) {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To(replicas),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{
						Name: "server", Image: "ghcr.io/selfheal-dev/sandfly-mcp:1.0",
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					}}},
				},
			},
		}, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{
				Selector: labels,
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
			},
		}
}

// callTool makes one real MCP call: connect, call the tool, close.
func callTool(ctx context.Context, url string) error {
	c := mcp.NewClient(&mcp.Implementation{Name: "follow-test", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, DisableStandaloneSSE: true, MaxRetries: -1}, nil)
	if err != nil {
		return err
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: alerts.ToolName})
	if err != nil {
		return err
	}
	if res.IsError {
		return errors.New("tool returned an error")
	}
	return nil
}

func refused(addr string) bool {
	conn, err := net.Dial("tcp", addr)
	if err == nil {
		conn.Close()
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

func TestProcessFollowsDeployment(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "follow-"}}
	g.Expect(cluster.Client.Create(ctx, nsObj)).To(Succeed())
	ns := nsObj.Name
	deploy, svc := workload(ns, 0)
	g.Expect(cluster.Client.Create(ctx, deploy)).To(Succeed())
	g.Expect(cluster.Client.Create(ctx, svc)).To(Succeed())

	srv, err := alerts.Start(alerts.Options{})
	g.Expect(err).NotTo(HaveOccurred())
	defer srv.Close()

	c, err := client.NewWithWatch(cluster.Config, client.Options{Scheme: controlplane.Scheme()})
	g.Expect(err).NotTo(HaveOccurred())
	var mu sync.Mutex
	var changes []follow.State
	followCtx, stopFollowing := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- follow.Follow(followCtx, c, ns, name, srv, follow.OnChange(func(s follow.State) {
			mu.Lock()
			defer mu.Unlock()
			changes = append(changes, s)
		}))
	}()
	lastChange := func() follow.State {
		mu.Lock()
		defer mu.Unlock()
		if len(changes) == 0 {
			return follow.State{Serving: true}
		}
		return changes[len(changes)-1]
	}

	// Scaled to zero: no ready endpoints, the port refuses connections.
	g.Eventually(srv.Serving, 2*time.Minute).Should(BeFalse())
	g.Expect(refused(srv.Addr())).To(BeTrue())
	g.Expect(callTool(ctx, srv.URL())).NotTo(Succeed())

	// Scaled to one: the pod becomes ready (kwok), the process serves real MCP.
	g.Expect(cluster.Client.Patch(ctx, deploy, client.RawPatch(client.Merge.Type(), []byte(`{"spec":{"replicas":1}}`)))).To(Succeed())
	g.Eventually(func() error { return callTool(ctx, srv.URL()) }, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	g.Expect(lastChange().ReadyPods).To(HaveLen(1))
	generation := srv.Generation()

	// Rollout restart: every pod is replaced, so the process restarts once. The
	// change that restarted it need not be the last: the old pod leaving is one more.
	mu.Lock()
	before := len(changes)
	mu.Unlock()
	restarted := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.ContainsFunc(changes[before:], func(s follow.State) bool { return s.Restarted })
	}
	g.Expect(cluster.Client.Patch(ctx, deploy, client.RawPatch(client.Merge.Type(),
		[]byte(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-03-14T12:00:00Z"}}}}}`)))).To(Succeed())
	g.Eventually(restarted, 2*time.Minute).Should(BeTrue())
	g.Expect(srv.Generation()).To(Equal(generation + 1))
	g.Expect(srv.Serving()).To(BeTrue())
	g.Eventually(func() error { return callTool(ctx, srv.URL()) }, 2*time.Minute, 100*time.Millisecond).Should(Succeed())

	// Scaled back to zero: refused again.
	g.Expect(cluster.Client.Patch(ctx, deploy, client.RawPatch(client.Merge.Type(), []byte(`{"spec":{"replicas":0}}`)))).To(Succeed())
	g.Eventually(func() bool { return refused(srv.Addr()) }, 2*time.Minute).Should(BeTrue())

	stopFollowing()
	g.Eventually(done).Should(Receive(BeNil()))
	mu.Lock()
	for _, c := range changes {
		t.Logf("change: serving=%v restarted=%v ready=%v", c.Serving, c.Restarted, c.ReadyPods)
	}
	mu.Unlock()
}
