package main

import (
	"bytes"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestParseMarker(t *testing.T) {
	tests := []struct {
		name    string
		args    string
		want    marker
		wantErr string
	}{
		{
			name: "core group quoted, ;-lists",
			args: `groups="",resources=services;pods;events,verbs=get;list;watch`,
			want: marker{groups: []string{""}, resources: []string{"services", "pods", "events"}, verbs: []string{"get", "list", "watch"}},
		},
		{
			name: "core alias, braced list, names and namespace",
			args: `groups={core,apps},resources=configmaps,resourceNames=a;b,verbs=get,namespace=ns,roleName=r`,
			want: marker{groups: []string{"", "apps"}, resources: []string{"configmaps"}, resourceNames: []string{"a", "b"}, verbs: []string{"get"}, namespace: "ns", roleName: "r"},
		},
		{
			name: "non-resource URLs",
			args: `urls=/metrics;/healthz,verbs=get`,
			want: marker{urls: []string{"/metrics", "/healthz"}, verbs: []string{"get"}},
		},
		{name: "no verbs", args: `groups=apps,resources=deployments`, wantErr: "no verbs"},
		{name: "unknown argument", args: `groups=apps,resources=deployments,verbs=get,scope=x`, wantErr: `unknown argument "scope"`},
		{name: "unterminated quote", args: `groups=",resources=pods,verbs=get`, wantErr: "unterminated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMarker(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseMarker(%q) error = %v, want one containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseMarker(%q): %v", tt.args, err)
			}
			if !equalMarker(got, tt.want) {
				t.Fatalf("parseMarker(%q) = %+v, want %+v", tt.args, got, tt.want)
			}
		})
	}
}

func equalMarker(a, b marker) bool {
	return slices.Equal(a.groups, b.groups) && slices.Equal(a.resources, b.resources) &&
		slices.Equal(a.resourceNames, b.resourceNames) && slices.Equal(a.verbs, b.verbs) &&
		slices.Equal(a.urls, b.urls) && a.namespace == b.namespace && a.roleName == b.roleName
}

func TestFileMarkers(t *testing.T) {
	tests := []struct {
		name        string
		src         string
		wantReasons []string
		wantErrs    []string
	}{
		{
			name: "each marker takes the rbac line right above it",
			src: `package p

// The package's RBAC.
// rbac: Reads pods.
// +kubebuilder:rbac:groups="",resources=pods,verbs=get
// rbac: Deletes failed pods.
// +kubebuilder:rbac:groups="",resources=pods,verbs=delete
`,
			wantReasons: []string{"Reads pods.", "Deletes failed pods."},
		},
		{
			name: "a marker without a reason fails, naming file and line",
			src: `package p

// rbac: Reads pods.
// +kubebuilder:rbac:groups="",resources=pods,verbs=get
// +kubebuilder:rbac:groups="",resources=pods,verbs=delete
`,
			wantReasons: []string{"Reads pods."},
			wantErrs:    []string{"p.go:5: marker has no reason"},
		},
		{
			name: "a reason separated by a blank line is not immediately above",
			src: `package p

// rbac: Reads pods.

// +kubebuilder:rbac:groups="",resources=pods,verbs=get
`,
			wantErrs: []string{"p.go:3: \"// rbac:\" is not immediately followed", "p.go:5: marker has no reason"},
		},
		{
			name: "an empty reason is no reason",
			src: `package p

// rbac:
// +kubebuilder:rbac:groups="",resources=pods,verbs=get
`,
			wantErrs: []string{"p.go:4: marker has no reason"},
		},
		{
			name: "marker text in a string literal is not a marker",
			src: `package p

const s = "// +kubebuilder:rbac:groups=\"\",resources=pods,verbs=get"
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			markers, errs := fileMarkers(token.NewFileSet(), "p.go", []byte(tt.src))
			var reasons []string
			for _, m := range markers {
				reasons = append(reasons, m.reason)
			}
			if !slices.Equal(reasons, tt.wantReasons) {
				t.Errorf("reasons = %q, want %q", reasons, tt.wantReasons)
			}
			if len(errs) != len(tt.wantErrs) {
				t.Fatalf("errors = %v, want %d: %q", errs, len(tt.wantErrs), tt.wantErrs)
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tt.wantErrs[i]) {
					t.Errorf("error %d = %v, want one containing %q", i, err, tt.wantErrs[i])
				}
			}
		})
	}
}

func TestScanMarkersSkipsWhatTheGoToolSkips(t *testing.T) {
	root := t.TempDir()
	noReason := "package p\n\n// +kubebuilder:rbac:groups=\"\",resources=secrets,verbs=get\n"
	writeFiles(t, root, map[string]string{
		"b/b.go":              "package b\n\n// rbac: B reads pods.\n// +kubebuilder:rbac:groups=\"\",resources=pods,verbs=get\n",
		"a/a.go":              "package a\n\n// rbac: A reads services.\n// +kubebuilder:rbac:groups=\"\",resources=services,verbs=get\n",
		"a/a_test.go":         noReason,
		"vendor/v/v.go":       noReason,
		"a/testdata/t.go":     noReason,
		".hidden/h.go":        noReason,
		"_scratch/s.go":       noReason,
		"a/notes.txt":         noReason,
		"b/not_a_test_go.txt": noReason,
	})
	markers, err := scanMarkers(root)
	if err != nil {
		t.Fatalf("scanMarkers: %v", err)
	}
	var got []string
	for _, m := range markers {
		got = append(got, m.pos+" "+m.reason)
	}
	want := []string{"a/a.go:4 A reads services.", "b/b.go:4 B reads pods."}
	if !slices.Equal(got, want) {
		t.Fatalf("markers = %q, want %q (lexical order, skipped files ignored)", got, want)
	}
}

// generatedRole is what controller-gen writes for the markers of TestAnnotate: the pods rule is
// the merge of a get;list;watch marker and a delete marker.
const generatedRole = `---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: manager
rules:
- apiGroups:
  - ""
  resources:
  - pods
  verbs:
  - delete
  - get
  - list
  - watch
- apiGroups:
  - apps
  resources:
  - deployments
  verbs:
  - patch
`

func TestAnnotate(t *testing.T) {
	read := marker{pos: "a.go:1", reason: "Diagnosis reads pods.", groups: []string{""}, resources: []string{"services", "pods"}, verbs: []string{"get", "list", "watch"}}
	del := marker{pos: "a.go:3", reason: "Remediation deletes failed pods.", groups: []string{""}, resources: []string{"pods"}, verbs: []string{"delete"}}
	patch := marker{pos: "a.go:5", reason: "Remediation restarts a Deployment.", groups: []string{"apps"}, resources: []string{"deployments"}, verbs: []string{"patch"}}
	readAgain := read
	readAgain.pos = "b.go:1"

	tests := []struct {
		name    string
		role    string
		markers []marker
		want    string
		wantErr []string
	}{
		{
			name:    "merged rule gets both reasons, in marker order; a repeated reason once",
			role:    generatedRole,
			markers: []marker{read, del, readAgain, patch},
			want: `---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: manager
rules:
# Diagnosis reads pods.
# Remediation deletes failed pods.
- apiGroups:
  - ""
  resources:
  - pods
  verbs:
  - delete
  - get
  - list
  - watch
# Remediation restarts a Deployment.
- apiGroups:
  - apps
  resources:
  - deployments
  verbs:
  - patch
`,
		},
		{
			name:    "rule without reason fails, naming the rule",
			role:    generatedRole,
			markers: []marker{read, del},
			wantErr: []string{`ClusterRole manager rule 2 (apiGroups=["apps"] resources=[deployments] verbs=[patch]) has no reason`},
		},
		{
			name:    "a verb of the marker must be in the rule",
			role:    generatedRole,
			markers: []marker{read, del, {pos: "c.go:9", reason: "Scales.", groups: []string{"apps"}, resources: []string{"deployments"}, verbs: []string{"update"}}},
			wantErr: []string{"rule 2 (", "c.go:9: marker contributes to no rule"},
		},
		{
			name:    "a namespaced marker belongs to a Role, not the ClusterRole",
			role:    generatedRole,
			markers: []marker{read, del, {pos: "d.go:2", reason: "Restarts in ns.", groups: []string{"apps"}, resources: []string{"deployments"}, verbs: []string{"patch"}, namespace: "ns"}},
			wantErr: []string{"rule 2 (", "d.go:2: marker contributes to no rule"},
		},
		{
			name: "rules with resource names and wildcard verbs",
			role: `---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: manager
  namespace: ns
rules:
- apiGroups:
  - ""
  resourceNames:
  - leader
  resources:
  - configmaps
  verbs:
  - '*'
`,
			markers: []marker{
				{pos: "e.go:1", reason: "Leader election.", groups: []string{""}, resources: []string{"configmaps"}, resourceNames: []string{"leader"}, verbs: []string{"get", "*"}, namespace: "ns"},
				{pos: "e.go:3", reason: "Other configmaps.", groups: []string{""}, resources: []string{"configmaps"}, verbs: []string{"get"}, namespace: "ns"},
			},
			wantErr: []string{"e.go:3: marker contributes to no rule"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := annotate([]byte(tt.role), tt.markers)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("annotate succeeded, want errors %q; output:\n%s", tt.wantErr, got)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("annotate: %v", err)
			}
			if string(got) != tt.want {
				t.Fatalf("annotate output:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestAnnotateIsDeterministic(t *testing.T) {
	markers := []marker{
		{pos: "a.go:1", reason: "Reads pods.", groups: []string{""}, resources: []string{"pods"}, verbs: []string{"get"}},
		{pos: "a.go:3", reason: "Deletes pods.", groups: []string{""}, resources: []string{"pods"}, verbs: []string{"delete"}},
		{pos: "a.go:5", reason: "Restarts.", groups: []string{"apps"}, resources: []string{"deployments"}, verbs: []string{"patch"}},
	}
	// A header (controller-gen's headerFile) is kept verbatim; a second role document
	// and a stale hand-written comment exercise multi-document output and re-runs.
	input := "# Copyright header.\n\n" + generatedRole + `---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: other
rules:
# stale comment
- apiGroups:
  - ""
  resources:
  - pods # hand-edited
  verbs:
  - get
`
	first, _, err := annotate([]byte(input), markers)
	if err != nil {
		t.Fatalf("annotate: %v", err)
	}
	again, _, err := annotate([]byte(input), markers)
	if err != nil {
		t.Fatalf("annotate again: %v", err)
	}
	if !bytes.Equal(first, again) {
		t.Fatalf("same input, different output:\n%s\n---- vs ----\n%s", first, again)
	}
	rerun, _, err := annotate(first, markers)
	if err != nil {
		t.Fatalf("annotate its own output: %v", err)
	}
	if !bytes.Equal(first, rerun) {
		t.Fatalf("annotating the output changed it:\n%s\n---- vs ----\n%s", first, rerun)
	}
	if !strings.HasPrefix(string(first), "# Copyright header.\n\n---\n") {
		t.Fatalf("header or leading --- lost:\n%s", first)
	}
	if strings.Contains(string(first), "stale comment") || strings.Contains(string(first), "hand-edited") {
		t.Fatalf("hand-written comment kept in a generated file:\n%s", first)
	}
	// Apart from the reasons, the file is what controller-gen wrote.
	if got, want := withoutComments(first), withoutComments([]byte(strings.ReplaceAll(input, " # hand-edited", ""))); got != want {
		t.Fatalf("structure changed:\n%s\nwant:\n%s", got, want)
	}
}

func withoutComments(b []byte) string {
	return regexp.MustCompile(`(?m)^ *#.*\n`).ReplaceAllString(string(b), "")
}

// TestControllerGenMergedRule runs the real controller-gen on a package whose markers
// it merges into one rule, then annotates the role it wrote.
func TestControllerGenMergedRule(t *testing.T) {
	bin, err := exec.Command("go", "tool", "-n", "controller-gen").Output()
	if err != nil {
		t.Fatalf("locating controller-gen (go tool -n controller-gen): %v", err)
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"go.mod": "module example.com/fixture\n\ngo 1.22\n",
		"fixture.go": `package fixture

// rbac: Diagnosis reads Services and pods.
// +kubebuilder:rbac:groups="",resources=services;pods,verbs=get;list;watch
// rbac: Remediation deletes failed pods.
// +kubebuilder:rbac:groups="",resources=pods,verbs=delete
// rbac: Diagnosis reads the workloads.
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets,verbs=get;list;watch
// rbac: Remediation restarts Deployments.
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=patch
`,
	})
	gen := exec.Command(strings.TrimSpace(string(bin)), "rbac:roleName=fixture", "paths=./...", "output:rbac:artifacts:config=config/rbac")
	gen.Dir = dir
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen: %v\n%s", err, out)
	}
	rolePath := filepath.Join(dir, "config", "rbac", "role.yaml")
	generated, err := os.ReadFile(rolePath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run([]string{dir}, rolePath); err != nil {
		t.Fatalf("run: %v", err)
	}
	got, err := os.ReadFile(rolePath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# Diagnosis reads Services and pods.\n# Remediation deletes failed pods.\n- apiGroups:\n  - \"\"\n  resources:\n  - pods\n",
		"# Diagnosis reads Services and pods.\n- apiGroups:\n  - \"\"\n  resources:\n  - services\n",
		"# Diagnosis reads the workloads.\n# Remediation restarts Deployments.\n- apiGroups:\n  - apps\n  resources:\n  - deployments\n",
		"# Diagnosis reads the workloads.\n- apiGroups:\n  - apps\n  resources:\n  - statefulsets\n",
	} {
		if !strings.Contains(string(got), want) {
			t.Errorf("annotated role lacks\n%s\ngot:\n%s", want, got)
		}
	}
	if withoutComments(got) != string(generated) {
		t.Fatalf("annotation changed more than comments:\n%s\ncontroller-gen wrote:\n%s", got, generated)
	}
}

// TestRepositoryRoleCarriesItsReasons checks the committed role against the repository's
// markers: `make manifests` must have been run after the last marker or reason change.
func TestRepositoryRolesCarryTheirReasons(t *testing.T) {
	root := filepath.Join("..", "..")
	// Each identity's role and the packages whose markers generate it (Makefile).
	roles := map[string][]string{
		"controller":  {"internal/controller", "internal/diagnostics"},
		"remediation": {"internal/remediation"},
		"gateway":     {"cmd/manager"},
	}
	for role, packages := range roles {
		rolePath := filepath.Join(root, "config", "rbac", role, "role.yaml")
		var markers []marker
		for _, pkg := range packages {
			found, err := scanMarkers(filepath.Join(root, filepath.FromSlash(pkg)))
			if err != nil {
				t.Fatalf("scanning %s: %v", pkg, err)
			}
			markers = append(markers, found...)
		}
		committed, err := os.ReadFile(rolePath)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := annotate(committed, markers)
		if err != nil {
			t.Fatalf("annotating %s: %v", rolePath, err)
		}
		if !bytes.Equal(got, committed) {
			t.Fatalf("%s is not up to date with the markers' reasons; run make manifests", rolePath)
		}
	}
}

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
