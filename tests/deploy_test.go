package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/syntax"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/natsauth"
)

// The deploy layout — Dockerfile and .dockerignore, infra/k8s (kustomize base,
// overlays, the KEDA component) and the Tiltfile — checked against the code it
// deploys. There is no Docker engine, cluster or Tilt binary here, so each
// piece is checked as far as its own tooling allows without one: the
// Dockerfile's build step runs on the context .dockerignore leaves; the
// manifests are rendered by kustomize's library and decoded strictly into the
// Kubernetes API types; the environment variables they set are the ones the
// built binaries say they read; the NATS configs load in nats-server, and the
// dev one serves Gyre's whole topology; the Tiltfile runs in Starlark with
// Tilt's functions recorded. What the manifests promise about trust is checked
// the same way: every image pinned to a release, every Deployment under a
// PodDisruptionBudget that lets a node drain, NetworkPolicies that deny by
// default (evaluated as the API defines them, for the paths Gyre needs and
// those it must not have), NATS loading the nkey users `gyre auth config`
// writes, and each service mounting its own seed, as the kubelet mounts it.

// TestDeployLayout builds every image's binary the way the Dockerfile does,
// then checks the manifests and the Tiltfile against those binaries.
func TestDeployLayout(t *testing.T) {
	root := repoRoot(t)
	df := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	var envs map[string][]string
	t.Run("dockerfile", func(t *testing.T) {
		envs = buildLikeDockerfile(t, root, df)
	})
	if envs == nil {
		t.Fatal("the Dockerfile's build failed: nothing to check the manifests against")
	}
	// The NATS identities as `gyre auth config --dir DIR` makes them (the
	// same library): a seed per identity and the server's users, which the
	// Secrets gyre-nats-seeds and gyre-nats-auth hold on a cluster.
	auth := makeNATSAuth(t)
	renders := map[string]rendered{}
	for _, overlay := range []string{"dev", "prod"} {
		t.Run("k8s/"+overlay, func(t *testing.T) {
			r := render(t, filepath.Join(root, "infra/k8s/overlays", overlay))
			renders[overlay] = r
			checkWorkloads(t, r, envs, overlay == "prod")
			checkImages(t, r)
			checkReplicas(t, r)
			checkDisruptionBudgets(t, r)
			checkServices(t, r)
			checkNetworkPolicies(t, r)
			checkNATSSeeds(t, r, auth)
			checkNATS(t, r, auth, overlay == "dev")
			if overlay == "prod" {
				checkScaledObjects(t, r)
			}
		})
	}
	t.Run("tiltfile", func(t *testing.T) {
		dev, ok := renders["dev"]
		if !ok {
			t.Fatal("the dev overlay did not render")
		}
		checkTiltfile(t, root, df, dev)
	})
}

// dockerfile is the parsed Dockerfile: its stages by name, in order.
type dockerfile struct {
	stages []instructions.Stage
}

func (d dockerfile) stage(t *testing.T, name string) instructions.Stage {
	t.Helper()
	for _, s := range d.stages {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("Dockerfile has no stage %q", name)
	return instructions.Stage{}
}

func parseDockerfile(t *testing.T, file string) dockerfile {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse %s: %v", file, err)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("parse %s: %v", file, err)
	}
	return dockerfile{stages: stages}
}

// imagePort is the port every Gyre container listens on.
const imagePort = 8080

// buildOutput is where the Dockerfile's build step writes the binary.
const buildOutput = "-o /out/service"

// buildLikeDockerfile runs the build stage's RUN step, for every SERVICE it
// accepts, on a copy of the repository filtered by .dockerignore (what
// `docker build .` sends), and returns each service's environment
// variables as its --help lists them.
func buildLikeDockerfile(t *testing.T, root string, df dockerfile) map[string][]string {
	build := df.stage(t, "build")
	var script string
	for _, c := range build.Commands {
		if run, ok := c.(*instructions.RunCommand); ok {
			script = strings.Join(run.CmdLine, " ")
		}
	}
	if !strings.Contains(script, buildOutput) {
		t.Fatalf("the build stage's RUN does not write %q: %s", buildOutput, script)
	}
	// The SERVICE values the step accepts are every service and the CLI.
	m := regexp.MustCompile(`\b((?:[a-z]+\|)+[a-z]+)\) pkg=`).FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("no `case` of services in the build step: %s", script)
	}
	accepted := strings.Split(m[1], "|")
	if !slices.Equal(slices.Sorted(slices.Values(accepted)), slices.Sorted(slices.Values(events.ServiceNames()))) {
		t.Fatalf("the Dockerfile builds %v, the catalog's services are %v", accepted, events.ServiceNames())
	}

	ctxDir := t.TempDir()
	copyContext(t, root, ctxDir)
	for _, s := range []string{"trainer-gpu", "service"} {
		for _, c := range df.stage(t, s).Commands {
			cp, ok := c.(*instructions.CopyCommand)
			if !ok || cp.From != "" {
				continue
			}
			for _, src := range cp.SourcePaths {
				if _, err := os.Stat(filepath.Join(ctxDir, src)); err != nil {
					t.Errorf("stage %s copies %s, which .dockerignore leaves out of the context: %v", s, src, err)
				}
			}
		}
	}
	if last := df.stages[len(df.stages)-1]; last.Name != "service" {
		t.Errorf("the last stage (docker build's default target) is %q, want service", last.Name)
	}
	for _, s := range []string{"trainer-gpu", "service"} {
		checkImageStage(t, df.stage(t, s))
	}

	bin := t.TempDir()
	runBuild := func(service string) ([]byte, error) {
		cmd := exec.Command("sh", "-c", strings.Replace(script, buildOutput, "-o "+filepath.Join(bin, service), 1))
		cmd.Dir = ctxDir
		cmd.Env = append(os.Environ(), "SERVICE="+service, "VERSION=v0.0.0-test")
		return cmd.CombinedOutput()
	}
	if out, err := runBuild(""); err == nil || !strings.Contains(string(out), "--build-arg SERVICE=") {
		t.Errorf("a build without SERVICE: %v, %s; want a failure naming --build-arg SERVICE", err, out)
	}
	if !strings.Contains(script, `gyre) pkg="./cmd/gyre"`) {
		t.Errorf("the build step does not build the CLI (SERVICE=gyre): %s", script)
	}
	envs := map[string][]string{}
	for _, s := range append(accepted, "gyre") {
		out, err := runBuild(s)
		if err != nil {
			t.Fatalf("the Dockerfile's build of SERVICE=%s: %v\n%s", s, err, out)
		}
		if s == "gyre" {
			out, err := exec.Command(filepath.Join(bin, s), "version").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "gyre v0.0.0-test") {
				t.Errorf("gyre version of the image's binary: %v, %s; want the VERSION build arg", err, out)
			}
			continue
		}
		out, err = exec.Command(filepath.Join(bin, s), "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --help: %v\n%s", s, err, out)
		}
		for _, m := range regexp.MustCompile(`\(env (GYRE_[A-Z0-9_]+)\)`).FindAllStringSubmatch(string(out), -1) {
			envs[s] = append(envs[s], m[1])
		}
		if !slices.Contains(envs[s], "GYRE_HTTP_ADDR") {
			t.Fatalf("%s --help names no GYRE_HTTP_ADDR:\n%s", s, out)
		}
	}
	return envs
}

// checkImageStage checks what a runnable image sets: the port, GYRE_HTTP_ADDR
// on it, a non-root user and an entrypoint.
func checkImageStage(t *testing.T, s instructions.Stage) {
	t.Helper()
	var port, user, entry bool
	for _, c := range s.Commands {
		switch c := c.(type) {
		case *instructions.ExposeCommand:
			port = slices.Equal(c.Ports, []string{strconv.Itoa(imagePort)})
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				if kv.Key == "GYRE_HTTP_ADDR" && kv.Value != ":"+strconv.Itoa(imagePort) {
					t.Errorf("stage %s: GYRE_HTTP_ADDR=%s, want :%d", s.Name, kv.Value, imagePort)
				}
			}
		case *instructions.UserCommand:
			user = c.User != "" && !strings.HasPrefix(c.User, "root") && !strings.HasPrefix(c.User, "0")
		case *instructions.EntrypointCommand:
			entry = len(c.CmdLine) > 0
		}
	}
	if !port || !user || !entry {
		t.Errorf("stage %s: EXPOSE %d %v, non-root USER %v, ENTRYPOINT %v; want all", s.Name, imagePort, port, user, entry)
	}
}

// copyContext copies the repository into dst as `docker build` sends it:
// without what .dockerignore names.
func copyContext(t *testing.T, root, dst string) {
	t.Helper()
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		skip, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		switch {
		case skip && d.IsDir() && !pm.Exclusions():
			return filepath.SkipDir
		case skip:
			return nil
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		case !d.Type().IsRegular():
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		out, err := os.Create(filepath.Join(dst, rel))
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, src); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatalf("copy the build context: %v", err)
	}
}

// rendered is an overlay as kustomize renders it, decoded.
type rendered struct {
	namespace    string
	deployments  []appsv1.Deployment
	statefulsets []appsv1.StatefulSet
	services     []corev1.Service
	configMaps   map[string]corev1.ConfigMap
	scaled       []scaledObject
	pdbs         []policyv1.PodDisruptionBudget
	hpas         []autoscalingv2.HorizontalPodAutoscaler
	netpols      []networkingv1.NetworkPolicy

	// namespaceLabels are the Namespace's labels, with the one the API
	// server sets (kubernetes.io/metadata.name).
	namespaceLabels map[string]string
}

// scaledObject is the part of KEDA's ScaledObject (keda.sh/v1alpha1) the
// manifests use; decoding is strict, so a field outside it is an error.
type scaledObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		ScaleTargetRef struct {
			Name string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// render runs kustomize on dir and decodes every resource strictly into its
// API type: a misspelt or misplaced field fails here as the API server
// would refuse it.
func render(t *testing.T, dir string) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	r := rendered{configMaps: map[string]corev1.ConfigMap{}}
	for _, res := range rm.Resources() {
		b, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		kind := res.GetKind()
		var target any
		switch kind {
		case "Namespace":
			r.namespace = res.GetName()
			r.namespaceLabels = map[string]string{"kubernetes.io/metadata.name": res.GetName()}
			for k, v := range res.GetLabels() {
				r.namespaceLabels[k] = v
			}
			target = &corev1.Namespace{}
		case "Deployment":
			r.deployments = append(r.deployments, appsv1.Deployment{})
			target = &r.deployments[len(r.deployments)-1]
		case "StatefulSet":
			r.statefulsets = append(r.statefulsets, appsv1.StatefulSet{})
			target = &r.statefulsets[len(r.statefulsets)-1]
		case "Service":
			r.services = append(r.services, corev1.Service{})
			target = &r.services[len(r.services)-1]
		case "ConfigMap":
			var cm corev1.ConfigMap
			if err := yaml.UnmarshalStrict(b, &cm); err != nil {
				t.Fatalf("ConfigMap %s: %v", res.GetName(), err)
			}
			r.configMaps[cm.Name] = cm
			continue
		case "PodDisruptionBudget":
			r.pdbs = append(r.pdbs, policyv1.PodDisruptionBudget{})
			target = &r.pdbs[len(r.pdbs)-1]
		case "HorizontalPodAutoscaler":
			r.hpas = append(r.hpas, autoscalingv2.HorizontalPodAutoscaler{})
			target = &r.hpas[len(r.hpas)-1]
		case "NetworkPolicy":
			r.netpols = append(r.netpols, networkingv1.NetworkPolicy{})
			target = &r.netpols[len(r.netpols)-1]
		case "ScaledObject":
			r.scaled = append(r.scaled, scaledObject{})
			target = &r.scaled[len(r.scaled)-1]
		default:
			t.Fatalf("%s %s: a kind this test does not know; teach it", kind, res.GetName())
		}
		if err := yaml.UnmarshalStrict(b, target); err != nil {
			t.Fatalf("%s %s: %v", kind, res.GetName(), err)
		}
		if ns := res.GetNamespace(); kind != "Namespace" && ns == "" {
			t.Errorf("%s %s has no namespace", kind, res.GetName())
		}
	}
	if r.namespace == "" {
		t.Fatalf("%s creates no Namespace", dir)
	}
	return r
}

// checkWorkloads checks each Gyre Deployment against its service: the image,
// the environment it reads, the port, probes and shutdown.
func checkWorkloads(t *testing.T, r rendered, envs map[string][]string, gpu bool) {
	t.Helper()
	seen := map[string]bool{}
	for _, d := range r.deployments {
		labels := d.Spec.Template.Labels
		if labels["app.kubernetes.io/part-of"] != "gyre" {
			t.Errorf("Deployment %s is not labelled app.kubernetes.io/part-of=gyre", d.Name)
			continue
		}
		svc := labels["app.kubernetes.io/name"]
		seen[d.Name] = true
		for k, v := range d.Spec.Selector.MatchLabels {
			if labels[k] != v {
				t.Errorf("Deployment %s: selector %s=%s does not match its pods", d.Name, k, v)
			}
		}
		if _, ok := envs[svc]; !ok {
			t.Errorf("Deployment %s runs %q, which is no service", d.Name, svc)
			continue
		}
		ps := d.Spec.Template.Spec
		var c *corev1.Container
		for i := range ps.Containers {
			if ps.Containers[i].Name == "service" {
				c = &ps.Containers[i]
			}
		}
		if c == nil {
			t.Errorf("Deployment %s has no container named service", d.Name)
			continue
		}
		wantImage := "gyre/" + svc
		if d.Name == "trainer-gpu" {
			wantImage = "gyre/trainer-gpu"
		}
		if name, _, _ := splitImage(c.Image); name != wantImage {
			t.Errorf("Deployment %s: image %s, want %s (at a release's tag)", d.Name, c.Image, wantImage)
		}

		env := map[string]string{}
		for _, from := range c.EnvFrom {
			if from.ConfigMapRef == nil {
				t.Errorf("Deployment %s: envFrom is not a ConfigMap", d.Name)
				continue
			}
			cm, ok := r.configMaps[from.ConfigMapRef.Name]
			if !ok {
				t.Errorf("Deployment %s: envFrom names no ConfigMap of the overlay", d.Name)
				continue
			}
			for k, v := range cm.Data {
				env[k] = v
			}
		}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		for k := range env {
			if !slices.Contains(envs[svc], k) {
				t.Errorf("Deployment %s sets %s, which %s does not read (its --help lists %v)", d.Name, k, svc, envs[svc])
			}
		}
		if v, ok := env["GYRE_STREAM_REPLICAS"]; ok {
			// More copies than NATS nodes: the service would stop at start.
			if n, err := strconv.Atoi(v); err != nil || n > natsNodes(r) {
				t.Errorf("Deployment %s: GYRE_STREAM_REPLICAS %q, for %d NATS nodes", d.Name, v, natsNodes(r))
			}
		}
		if pool, ok := env["GYRE_TRAINER_POOL"]; ok && d.Name != "trainer-"+pool {
			t.Errorf("Deployment %s serves pool %s: name it trainer-%s", d.Name, pool, pool)
		}

		_, port, err := net.SplitHostPort(env["GYRE_HTTP_ADDR"])
		if err != nil || port != strconv.Itoa(imagePort) {
			t.Errorf("Deployment %s: GYRE_HTTP_ADDR %q, want :%d", d.Name, env["GYRE_HTTP_ADDR"], imagePort)
		}
		if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != imagePort {
			t.Errorf("Deployment %s: ports %+v, want one named http on %d", d.Name, c.Ports, imagePort)
		}
		if a := d.Spec.Template.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(imagePort) || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("Deployment %s: Prometheus annotations %v", d.Name, a)
		}
		for _, p := range []struct {
			name  string
			probe *corev1.Probe
			path  string
		}{{"startup", c.StartupProbe, "/healthz"}, {"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Errorf("Deployment %s: no HTTP %s probe, want GET %s on port http", d.Name, p.name, p.path)
			} else if g := p.probe.HTTPGet; g.Path != p.path || g.Port.String() != "http" {
				t.Errorf("Deployment %s: %s probe GET %s on port %s, want GET %s on port http", d.Name, p.name, g.Path, g.Port.String(), p.path)
			}
		}
		grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
		if ps.TerminationGracePeriodSeconds != nil {
			grace = *ps.TerminationGracePeriodSeconds
		}
		shutdown, err := time.ParseDuration(env["GYRE_SHUTDOWN_TIMEOUT"])
		if err != nil || time.Duration(grace)*time.Second <= shutdown {
			t.Errorf("Deployment %s: terminationGracePeriodSeconds %d must exceed GYRE_SHUTDOWN_TIMEOUT %q, or the kill cuts the drain short", d.Name, grace, env["GYRE_SHUTDOWN_TIMEOUT"])
		}
		if sc := ps.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("Deployment %s does not require a non-root user", d.Name)
		}
	}
	for _, svc := range events.ServiceNames() {
		name := svc
		if svc == events.ServiceTrainer {
			name = "trainer-cpu"
		}
		if !seen[name] {
			t.Errorf("no Deployment %s runs %s", name, svc)
		}
	}
	if gpu != seen["trainer-gpu"] {
		t.Errorf("Deployment trainer-gpu present %v, want %v", seen["trainer-gpu"], gpu)
	}
}

// natsNodes returns the replicas of the overlay's NATS StatefulSet.
func natsNodes(r rendered) int {
	for _, ss := range r.statefulsets {
		if ss.Name == "nats" && ss.Spec.Replicas != nil {
			return int(*ss.Spec.Replicas)
		}
	}
	return 0
}

// podTemplates returns the pod templates of the overlay's workloads.
func podTemplates(r rendered) []corev1.PodTemplateSpec {
	var out []corev1.PodTemplateSpec
	for _, d := range r.deployments {
		out = append(out, d.Spec.Template)
	}
	for _, s := range r.statefulsets {
		out = append(out, s.Spec.Template)
	}
	return out
}

// checkReplicas checks how each Deployment runs beside itself: the
// deployer and the monitor at two replicas or more, each with a
// PodDisruptionBudget, the deployer autoscaled by an HPA; a service whose
// replicas share durable consumers is updated by Recreate, so that two
// versions never read one consumer side by side; the deployer, which shares
// none and serves, rolls with no replica unavailable.
func checkReplicas(t *testing.T, r rendered) {
	t.Helper()
	byName := map[string]appsv1.Deployment{}
	for _, d := range r.deployments {
		byName[d.Name] = d
	}
	for _, name := range []string{events.ServiceDeployer, events.ServiceMonitor} {
		d, ok := byName[name]
		if !ok {
			t.Errorf("no Deployment %s", name)
			continue
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
			t.Errorf("Deployment %s: replicas %v, want 2 or more", name, d.Spec.Replicas)
		}
		covered := false
		for _, p := range r.pdbs {
			if p.Spec.Selector != nil && p.Spec.Selector.MatchLabels["app.kubernetes.io/name"] == name {
				covered = p.Spec.MaxUnavailable != nil || p.Spec.MinAvailable != nil
			}
		}
		if !covered {
			t.Errorf("Deployment %s: no PodDisruptionBudget selects it", name)
		}
	}
	scaled := false
	for _, h := range r.hpas {
		if h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == events.ServiceDeployer {
			scaled = h.Spec.MinReplicas != nil && *h.Spec.MinReplicas >= 2 && h.Spec.MaxReplicas >= *h.Spec.MinReplicas
		}
	}
	if !scaled {
		t.Errorf("no HorizontalPodAutoscaler scales the deployer from 2 replicas up")
	}
	for _, d := range r.deployments {
		svc := d.Spec.Template.Labels["app.kubernetes.io/name"]
		shared := false
		for _, c := range events.ServiceConsumers()[svc] {
			shared = shared || !c.PerReplica
		}
		st := d.Spec.Strategy
		if shared && st.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("Deployment %s: strategy %q; its replicas share durable consumers, want Recreate", d.Name, st.Type)
		}
		if svc == events.ServiceDeployer && (st.Type != appsv1.RollingUpdateDeploymentStrategyType ||
			st.RollingUpdate == nil || st.RollingUpdate.MaxUnavailable == nil || st.RollingUpdate.MaxUnavailable.IntValue() != 0) {
			t.Errorf("Deployment %s: strategy %+v; it serves, want RollingUpdate with maxUnavailable 0", d.Name, st)
		}
	}
}

// checkServices checks that every Service selects pods and that its target
// ports are ports those pods name.
func checkServices(t *testing.T, r rendered) {
	t.Helper()
	for _, s := range r.services {
		var matched []corev1.PodTemplateSpec
		for _, p := range podTemplates(r) {
			ok := len(s.Spec.Selector) > 0
			for k, v := range s.Spec.Selector {
				ok = ok && p.Labels[k] == v
			}
			if ok {
				matched = append(matched, p)
			}
		}
		if len(matched) == 0 {
			t.Errorf("Service %s selects no pods (%v)", s.Name, s.Spec.Selector)
			continue
		}
		for _, port := range s.Spec.Ports {
			for _, p := range matched {
				if !podHasPort(p, port.TargetPort.String()) {
					t.Errorf("Service %s: target port %s is not a port of pods %v", s.Name, port.TargetPort.String(), p.Labels)
				}
			}
		}
	}
}

func podHasPort(p corev1.PodTemplateSpec, name string) bool {
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == name || strconv.Itoa(int(cp.ContainerPort)) == name {
				return true
			}
		}
	}
	return false
}

// natsPort returns the container port of the NATS StatefulSet named name.
func natsPort(t *testing.T, ss appsv1.StatefulSet, name string) int {
	t.Helper()
	for _, cp := range ss.Spec.Template.Spec.Containers[0].Ports {
		if cp.Name == name {
			return int(cp.ContainerPort)
		}
	}
	t.Fatalf("StatefulSet %s has no port %s", ss.Name, name)
	return 0
}

// checkNATS loads the overlay's NATS config as nats-server does, from the
// files the pod's config volume holds, and checks it against the StatefulSet:
// it must include the users of the Secret gyre-nats-auth, so that no client
// connects without a seed. With run, it starts a server from it, which turns
// away a client without a seed and serves the admin, who provisions Gyre's
// whole topology there.
func checkNATS(t *testing.T, r rendered, auth natsAuth, run bool) {
	t.Helper()
	if len(r.statefulsets) != 1 || r.statefulsets[0].Name != "nats" {
		t.Fatalf("want one StatefulSet, nats; have %d", len(r.statefulsets))
	}
	ss := r.statefulsets[0]
	c := ss.Spec.Template.Spec.Containers[0]
	// The image is the server version the tests run (libs/natstest embeds it).
	if v := moduleVersion(t, "github.com/nats-io/nats-server/v2"); c.Image != "nats:"+strings.TrimPrefix(v, "v")+"-alpine" {
		t.Errorf("NATS image %s, want nats:%s-alpine, the server the tests run", c.Image, strings.TrimPrefix(v, "v"))
	}
	// The pod's files, laid out in a scratch directory as the kubelet lays
	// out its volumes: what --config names, and what that includes.
	confPath := ""
	for i, a := range c.Args {
		if a == "--config" && i+1 < len(c.Args) {
			confPath = c.Args[i+1]
		}
	}
	files := podFiles(t, r, ss.Spec.Template.Spec, c, map[string]map[string]string{
		natsAuthSecret: {natsAuthKey: auth.fragment},
	})
	confFile, ok := files[confPath]
	if !ok || confFile.data == "" {
		t.Fatalf("StatefulSet nats: --config %q is no file of its volumes (%v)", confPath, slices.Sorted(maps.Keys(files)))
	}
	fsRoot := t.TempDir()
	for p, f := range files {
		dst := filepath.Join(fsRoot, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, []byte(f.data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// nats-server reads an include relative to the including file's
	// directory (conf/parse.go joins it to that directory, absolute or not).
	var includes []string
	authIncluded := false
	for _, m := range regexp.MustCompile(`(?m)^\s*include\s+["']?([^"'\s;]+)`).FindAllStringSubmatch(confFile.data, -1) {
		resolved := path.Join(path.Dir(confPath), m[1])
		includes = append(includes, m[1]+" ("+resolved+")")
		if f, ok := files[resolved]; ok && f.kind == "Secret" && f.name == natsAuthSecret && f.key == natsAuthKey {
			authIncluded = true
		}
	}
	if !authIncluded {
		t.Errorf("nats.conf includes %v; want the users of Secret %s (key %s) as mounted in the pod, relative to %s: without them any client connects",
			includes, natsAuthSecret, natsAuthKey, path.Dir(confPath))
	}
	t.Setenv("POD_NAME", ss.Name+"-0")
	opts, err := server.ProcessConfigFile(filepath.Join(fsRoot, filepath.FromSlash(confPath)))
	if err != nil {
		t.Fatalf("nats-server cannot load the overlay's nats.conf with the users `gyre auth config` writes: %v", err)
	}
	if len(opts.Nkeys) != len(auth.users) || len(opts.Users) > 0 || opts.NoAuthUser != "" || opts.Username != "" || opts.Authorization != "" {
		t.Errorf("nats.conf: %d nkey users (want the %d of gyre-nats-auth), %d other users, no_auth_user %q, single user %q, token set %v; want nkey users only",
			len(opts.Nkeys), len(auth.users), len(opts.Users), opts.NoAuthUser, opts.Username, opts.Authorization != "")
	}
	// KEDA reads the trainer pools' lag in account $G (components/keda): the
	// users must stay in the global account.
	for _, u := range opts.Nkeys {
		if u.Account != nil && u.Account.Name != "$G" {
			t.Errorf("nats.conf: user %s is in account %s; KEDA's ScaledObjects read $G", u.Nkey, u.Account.Name)
		}
	}
	if opts.ServerName != ss.Name+"-0" || !opts.JetStream {
		t.Errorf("nats.conf: server_name %q (want the pod's name), jetstream %v", opts.ServerName, opts.JetStream)
	}
	if opts.Port != natsPort(t, ss, "client") || opts.HTTPPort != natsPort(t, ss, "monitor") {
		t.Errorf("nats.conf listens on %d, monitors on %d; the pod's ports client and monitor are %d and %d",
			opts.Port, opts.HTTPPort, natsPort(t, ss, "client"), natsPort(t, ss, "monitor"))
	}
	// data.batch.arrived may carry rows inline, up to what `gyre up` allows.
	if opts.MaxPayload < 8<<20 {
		t.Errorf("nats.conf max_payload %d, want at least 8 MB", opts.MaxPayload)
	}
	for _, m := range c.VolumeMounts {
		if m.Name == "data" && !strings.HasPrefix(opts.StoreDir, m.MountPath+"/") {
			t.Errorf("JetStream stores in %s, outside the data volume at %s", opts.StoreDir, m.MountPath)
		}
	}
	replicas := int(*ss.Spec.Replicas)
	if replicas > 1 {
		var routes []string
		for _, u := range opts.Routes {
			routes = append(routes, u.Host)
		}
		var want []string
		for i := range replicas {
			want = append(want, fmt.Sprintf("%s-%d.%s:%d", ss.Name, i, ss.Spec.ServiceName, natsPort(t, ss, "cluster")))
		}
		if opts.Cluster.Port != natsPort(t, ss, "cluster") || !slices.Equal(routes, want) {
			t.Errorf("nats.conf cluster port %d, routes %v; want %d and %v", opts.Cluster.Port, routes, natsPort(t, ss, "cluster"), want)
		}
	} else if opts.Cluster.Port != 0 {
		t.Errorf("one NATS node with a cluster block (port %d)", opts.Cluster.Port)
	}
	if !run {
		return
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, -1
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("the NATS server from the overlay's config did not start")
	}
	if nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("the NATS server from the overlay's config takes a client without a seed")
	}
	admin, err := natsauth.ConnectOptions(filepath.Join(auth.dir, events.IdentityAdmin+natsauth.SeedExt))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), admin...)
	if err != nil {
		t.Fatalf("connect as the admin to the NATS server from the overlay's config: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Provision(t.Context(), js, bus.FullTopology()); err != nil {
		t.Fatalf("provision Gyre's topology on the overlay's NATS config: %v", err)
	}
}

// moduleVersion returns the version of a module the workspace requires.
func moduleVersion(t *testing.T, mod string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", mod).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", mod, err)
	}
	return strings.TrimSpace(string(out))
}

// checkScaledObjects checks that each KEDA ScaledObject scales a trainer pool
// on the lag of that pool's job consumer, read where NATS serves /jsz.
func checkScaledObjects(t *testing.T, r rendered) {
	t.Helper()
	if len(r.scaled) == 0 {
		t.Fatal("no ScaledObject")
	}
	var monitor int
	for _, s := range r.services {
		if s.Name == "nats" {
			for _, p := range s.Spec.Ports {
				if p.Name == "monitor" {
					monitor = int(p.Port)
				}
			}
		}
	}
	for _, so := range r.scaled {
		if so.APIVersion != "keda.sh/v1alpha1" {
			t.Errorf("ScaledObject %s: apiVersion %s", so.Metadata.Name, so.APIVersion)
		}
		i := slices.IndexFunc(r.deployments, func(d appsv1.Deployment) bool { return d.Name == so.Spec.ScaleTargetRef.Name })
		if i < 0 {
			t.Errorf("ScaledObject %s scales %q, no Deployment", so.Metadata.Name, so.Spec.ScaleTargetRef.Name)
			continue
		}
		var pool string
		for _, e := range r.deployments[i].Spec.Template.Spec.Containers[0].Env {
			if e.Name == "GYRE_TRAINER_POOL" {
				pool = e.Value
			}
		}
		if pool == "" {
			t.Errorf("ScaledObject %s scales %s, which is no trainer pool", so.Metadata.Name, r.deployments[i].Name)
			continue
		}
		if pool == "cpu" && (so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 1) {
			t.Errorf("ScaledObject %s may scale the cpu pool to zero, and the scheduler with it", so.Metadata.Name)
		}
		if len(so.Spec.Triggers) != 1 {
			t.Errorf("ScaledObject %s: %d triggers, want 1", so.Metadata.Name, len(so.Spec.Triggers))
			continue
		}
		tr := so.Spec.Triggers[0]
		want := map[string]string{
			"natsServerMonitoringEndpoint": fmt.Sprintf("nats.%s.svc.cluster.local:%d", r.namespace, monitor),
			"account":                      "$G",
			"stream":                       events.StreamJobs,
			"consumer":                     events.JobConsumer(pool).Durable(),
		}
		if tr.Type != "nats-jetstream" {
			t.Errorf("ScaledObject %s: trigger %s, want nats-jetstream", so.Metadata.Name, tr.Type)
		}
		for k, v := range want {
			if tr.Metadata[k] != v {
				t.Errorf("ScaledObject %s: %s %q, want %q", so.Metadata.Name, k, tr.Metadata[k], v)
			}
		}
		if n, err := strconv.Atoi(tr.Metadata["lagThreshold"]); err != nil || n < 1 {
			t.Errorf("ScaledObject %s: lagThreshold %q, want a positive integer", so.Metadata.Name, tr.Metadata["lagThreshold"])
		}
	}
}

// tiltCall is one call of a Tilt function the Tiltfile made.
type tiltCall struct {
	fn     string
	args   starlark.Tuple
	kwargs map[string]starlark.Value
}

// checkTiltfile runs the Tiltfile in Starlark with Tilt's functions recorded,
// and checks the images it builds and the resources it names against the
// Dockerfile and the dev overlay.
func checkTiltfile(t *testing.T, root string, df dockerfile, dev rendered) {
	t.Helper()
	var calls []tiltCall
	record := func(name string, result starlark.Value) *starlark.Builtin {
		return starlark.NewBuiltin(name, func(_ *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			kw := map[string]starlark.Value{}
			for _, kv := range kwargs {
				kw[string(kv[0].(starlark.String))] = kv[1]
			}
			calls = append(calls, tiltCall{fn: name, args: args, kwargs: kw})
			if name == "kustomize" && len(args) == 1 {
				return starlark.String("kustomize:" + string(args[0].(starlark.String))), nil
			}
			return result, nil
		})
	}
	config := starlarkstruct.FromStringDict(starlark.String("config"), starlark.StringDict{
		"define_string_list": record("config.define_string_list", starlark.None),
		"parse":              record("config.parse", starlark.NewDict(0)),
	})
	predeclared := starlark.StringDict{
		"config":              config,
		"allow_k8s_contexts":  record("allow_k8s_contexts", starlark.None),
		"docker_build":        record("docker_build", starlark.None),
		"k8s_yaml":            record("k8s_yaml", starlark.None),
		"kustomize":           record("kustomize", starlark.None),
		"k8s_resource":        record("k8s_resource", starlark.None),
		"local_resource":      record("local_resource", starlark.None),
		"TRIGGER_MODE_MANUAL": starlark.MakeInt(1),
	}
	thread := &starlark.Thread{Name: "Tiltfile"}
	// Tilt's dialect allows top-level for, if and reassignment.
	opts := &syntax.FileOptions{TopLevelControl: true, GlobalReassign: true, Set: true, While: true, Recursion: true}
	if _, err := starlark.ExecFileOptions(opts, thread, filepath.Join(root, "Tiltfile"), nil, predeclared); err != nil {
		t.Fatalf("the Tiltfile does not run: %v", err)
	}

	// Tilt swaps its build in for every reference of the same name when
	// docker_build's reference has no tag, and only for that exact tag when it
	// has one (its RefSelector): the overlay's references carry the release's
	// tag, so the builds must carry none.
	images := map[string]bool{}
	for _, d := range dev.deployments {
		name, _, _ := splitImage(d.Spec.Template.Spec.Containers[0].Image)
		images[name] = true
	}
	workloads := map[string]bool{}
	for _, d := range dev.deployments {
		workloads[d.Name] = true
	}
	for _, s := range dev.statefulsets {
		workloads[s.Name] = true
	}
	modules := goWorkModules(t, root)
	// A workload that mounts a Secret (or the seeds' and users' Secrets in a
	// projected volume) cannot start before the local resource that runs
	// scripts/dev-secrets.sh has made them.
	secretsResource := ""
	for _, c := range calls {
		if c.fn == "local_resource" && strings.Contains(strKw(c.kwargs, "cmd"), "scripts/dev-secrets.sh") {
			secretsResource = str(c.args, 0)
		}
	}
	if secretsResource == "" {
		t.Error("no local_resource of the Tiltfile runs scripts/dev-secrets.sh: the dev overlay's Secrets would not exist")
	}
	mountsSecret := map[string]bool{}
	for _, p := range append(deploymentPods(dev), statefulSetPods(dev)...) {
		for _, v := range p.spec.Volumes {
			secret := v.Secret != nil
			if v.Projected != nil {
				for _, s := range v.Projected.Sources {
					secret = secret || s.Secret != nil
				}
			}
			mountsSecret[p.name] = mountsSecret[p.name] || secret
		}
	}
	built := map[string]bool{}
	for _, c := range calls {
		switch c.fn {
		case "docker_build":
			ref := str(c.args, 0)
			built[ref] = true
			if name, tag, digest := splitImage(ref); tag != "" || digest != "" {
				t.Errorf("docker_build %s: a tagged reference replaces only that tag, not the overlay's %s:<release>", ref, name)
			} else if !images[ref] {
				t.Errorf("Tiltfile builds %s, which no workload of the dev overlay runs", ref)
			}
			dockerfile := strKw(c.kwargs, "dockerfile")
			if _, err := os.Stat(filepath.Join(root, dockerfile)); err != nil {
				t.Errorf("docker_build %s: dockerfile %s: %v", ref, dockerfile, err)
			}
			df.stage(t, strKw(c.kwargs, "target"))
			args, _ := c.kwargs["build_args"].(*starlark.Dict)
			if v, _, _ := args.Get(starlark.String("SERVICE")); v == nil || "gyre/"+string(v.(starlark.String)) != ref {
				t.Errorf("docker_build %s: build_args SERVICE %v", ref, v)
			}
			ignore, _ := c.kwargs["ignore"].(*starlark.List)
			for i := range ignore.Len() {
				pat := string(ignore.Index(i).(starlark.String))
				for _, m := range modules {
					if ok, _ := path.Match(pat, m); ok || m == pat || strings.HasPrefix(m, pat+"/") {
						t.Errorf("docker_build %s ignores %s, a module of go.work the build needs", ref, pat)
					}
				}
			}
		case "k8s_yaml":
			if got, want := str(c.args, 0), "kustomize:infra/k8s/overlays/dev"; got != want {
				t.Errorf("k8s_yaml(%s), want %s", got, want)
			}
		case "k8s_resource":
			w := str(c.args, 0)
			if !workloads[w] {
				t.Errorf("k8s_resource(%q): the dev overlay has no such workload", w)
			}
			var names []string
			if deps, ok := c.kwargs["resource_deps"].(*starlark.List); ok {
				for i := range deps.Len() {
					s, _ := deps.Index(i).(starlark.String)
					names = append(names, string(s))
				}
			}
			if mountsSecret[w] && secretsResource != "" && !slices.Contains(names, secretsResource) {
				t.Errorf("k8s_resource(%q): resource_deps %v; it mounts Secrets that %s makes, want it among them", w, names, secretsResource)
			}
		}
	}
	for img := range images {
		if !built[img] {
			t.Errorf("the dev overlay runs %s, which the Tiltfile does not build", img)
		}
	}
}

// goWorkModules returns the module directories go.work uses, relative.
func goWorkModules(t *testing.T, root string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	var mods []string
	for _, d := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, d)
		if err != nil {
			t.Fatal(err)
		}
		mods = append(mods, filepath.ToSlash(rel))
	}
	return mods
}

func str(args starlark.Tuple, i int) string {
	if i >= len(args) {
		return ""
	}
	s, _ := args[i].(starlark.String)
	return string(s)
}

func strKw(kw map[string]starlark.Value, k string) string {
	s, _ := kw[k].(starlark.String)
	return string(s)
}

// The NATS users' Secret the server's config includes, and its key.
const (
	natsAuthSecret = "gyre-nats-auth"
	natsAuthKey    = "auth.conf"
	// natsSeedsSecret holds each service's seed as <identity>.nk.
	natsSeedsSecret = "gyre-nats-seeds"
	// envNATSNkey names a service's seed file (libs/service); checkWorkloads
	// checks that every service's --help lists it.
	envNATSNkey = "GYRE_NATS_NKEY"
)

// natsAuth is what `gyre auth config --dir dir` makes: a seed file per
// identity in dir, and the server's users (the fragment its --out writes).
type natsAuth struct {
	dir      string
	users    []natsauth.User
	fragment string
}

func makeNATSAuth(t *testing.T) natsAuth {
	t.Helper()
	a := natsAuth{dir: t.TempDir()}
	var err error
	if a.users, err = natsauth.EnsureAll(a.dir); err != nil {
		t.Fatalf("make the NATS identities: %v", err)
	}
	if a.fragment, err = natsauth.ServerConfig(a.users); err != nil {
		t.Fatalf("write the NATS users: %v", err)
	}
	return a
}

// namedPod is a workload's pod template, named after the workload.
type namedPod struct {
	kind, name string
	labels     map[string]string
	replicas   *int32
	spec       corev1.PodSpec
}

func deploymentPods(r rendered) []namedPod {
	var out []namedPod
	for _, d := range r.deployments {
		out = append(out, namedPod{"Deployment", d.Name, d.Spec.Template.Labels, d.Spec.Replicas, d.Spec.Template.Spec})
	}
	return out
}

func statefulSetPods(r rendered) []namedPod {
	var out []namedPod
	for _, s := range r.statefulsets {
		out = append(out, namedPod{"StatefulSet", s.Name, s.Spec.Template.Labels, s.Spec.Replicas, s.Spec.Template.Spec})
	}
	return out
}

// podFile is a file a container sees: which ConfigMap or Secret key it is,
// and its content (a Secret's as secrets gives it; Secrets are made outside
// the manifests).
type podFile struct {
	kind, name, key string
	data            string
}

// podFiles returns the files of c's ConfigMap, Secret and projected volumes
// by their path in the container.
func podFiles(t *testing.T, r rendered, ps corev1.PodSpec, c corev1.Container, secrets map[string]map[string]string) map[string]podFile {
	t.Helper()
	files := map[string]podFile{}
	add := func(dir, kind, name string, items []corev1.KeyToPath, data map[string]string) {
		if items == nil {
			for _, k := range slices.Sorted(maps.Keys(data)) {
				items = append(items, corev1.KeyToPath{Key: k, Path: k})
			}
		}
		for _, it := range items {
			v, ok := data[it.Key]
			if !ok {
				t.Errorf("a volume maps key %s of %s %s, which it does not have", it.Key, kind, name)
			}
			files[path.Join(dir, it.Path)] = podFile{kind: kind, name: name, key: it.Key, data: v}
		}
	}
	configMap := func(name string) map[string]string {
		cm, ok := r.configMaps[name]
		if !ok {
			t.Errorf("a volume names ConfigMap %s, which the overlay does not make", name)
		}
		return cm.Data
	}
	secret := func(name string) map[string]string {
		s, ok := secrets[name]
		if !ok {
			t.Errorf("a volume names Secret %s, whose content this test does not know; teach it", name)
		}
		return s
	}
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(ps.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			continue // a StatefulSet's volumeClaimTemplate: storage, no files
		}
		v := ps.Volumes[i]
		switch {
		case v.ConfigMap != nil:
			add(m.MountPath, "ConfigMap", v.ConfigMap.Name, v.ConfigMap.Items, configMap(v.ConfigMap.Name))
		case v.Secret != nil:
			add(m.MountPath, "Secret", v.Secret.SecretName, v.Secret.Items, secret(v.Secret.SecretName))
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				switch {
				case s.ConfigMap != nil:
					add(m.MountPath, "ConfigMap", s.ConfigMap.Name, s.ConfigMap.Items, configMap(s.ConfigMap.Name))
				case s.Secret != nil:
					add(m.MountPath, "Secret", s.Secret.Name, s.Secret.Items, secret(s.Secret.Name))
				}
			}
		}
	}
	return files
}

// splitImage splits an image reference into its name, tag and digest.
func splitImage(ref string) (name, tag, digest string) {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref, digest = ref[:i], ref[i+1:]
	}
	// A tag follows the last colon after the last slash (a registry's port
	// is before it).
	if c := strings.LastIndex(ref, ":"); c > strings.LastIndex(ref, "/") {
		ref, tag = ref[:c], ref[c+1:]
	}
	return ref, tag, digest
}

// releaseTag is the form of a release's tag (what VERSION is built with).
var releaseTag = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`)

// checkImages checks that every container of every workload runs a pinned
// image: with a tag or a digest, never :latest (what a node pulls then is
// whatever was pushed last), and every gyre/* image at one release's tag.
func checkImages(t *testing.T, r rendered) {
	t.Helper()
	for _, c := range []struct{ ref, name, tag, digest string }{
		{"gyre/ingest", "gyre/ingest", "", ""},
		{"gyre/ingest:v0.14.0", "gyre/ingest", "v0.14.0", ""},
		{"localhost:5000/gyre/ingest", "localhost:5000/gyre/ingest", "", ""},
		{"nats:2.15.2-alpine@sha256:0123", "nats", "2.15.2-alpine", "sha256:0123"},
	} {
		if n, tag, d := splitImage(c.ref); n != c.name || tag != c.tag || d != c.digest {
			t.Fatalf("splitImage(%q) = %q, %q, %q; want %q, %q, %q", c.ref, n, tag, d, c.name, c.tag, c.digest)
		}
	}
	releases := map[string][]string{}
	for _, p := range append(deploymentPods(r), statefulSetPods(r)...) {
		for _, c := range append(slices.Clone(p.spec.InitContainers), p.spec.Containers...) {
			name, tag, digest := splitImage(c.Image)
			switch {
			case tag == "" && digest == "":
				t.Errorf("%s %s, container %s: image %s has no tag: it runs whatever :latest is when a node pulls it", p.kind, p.name, c.Name, c.Image)
			case tag == "latest":
				t.Errorf("%s %s, container %s: image %s: pin a release, not :latest", p.kind, p.name, c.Name, c.Image)
			case strings.HasPrefix(name, "gyre/"):
				if !releaseTag.MatchString(tag) {
					t.Errorf("%s %s: image %s, want a release's tag (vX.Y.Z)", p.kind, p.name, c.Image)
				}
				releases[tag] = append(releases[tag], c.Image)
			}
		}
	}
	if len(releases) > 1 {
		t.Errorf("the gyre images are at several releases, %v; a release bumps them all (base/kustomization.yaml, images)", releases)
	}
}

// labelSelector is a metav1.LabelSelector, read through its JSON form.
type labelSelector struct {
	MatchLabels      map[string]string `json:"matchLabels"`
	MatchExpressions []struct {
		Key      string   `json:"key"`
		Operator string   `json:"operator"`
		Values   []string `json:"values"`
	} `json:"matchExpressions"`
}

// selectorOf returns the selector of a *metav1.LabelSelector, or nil for a
// nil one.
func selectorOf(t *testing.T, sel any) *labelSelector {
	t.Helper()
	b, err := json.Marshal(sel)
	if err != nil {
		t.Fatal(err)
	}
	var s *labelSelector
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// matches says whether labels satisfy the selector as the API defines it:
// an empty selector selects everything.
func (s *labelSelector) matches(t *testing.T, labels map[string]string) bool {
	t.Helper()
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, has := labels[e.Key]
		var ok bool
		switch e.Operator {
		case "In":
			ok = has && slices.Contains(e.Values, v)
		case "NotIn":
			ok = !has || !slices.Contains(e.Values, v)
		case "Exists":
			ok = has
		case "DoesNotExist":
			ok = !has
		default:
			t.Fatalf("label selector operator %q", e.Operator)
		}
		if !ok {
			return false
		}
	}
	return true
}

// checkDisruptionBudgets checks that one PodDisruptionBudget selects each
// Deployment's pods and that it lets a node drain evict them: with one
// replica only maxUnavailable does (minAvailable 1 refuses every eviction);
// a pod that two budgets select cannot be evicted at all. A budget that
// selects no pod is left over from a workload that is gone.
func checkDisruptionBudgets(t *testing.T, r rendered) {
	t.Helper()
	pods := append(deploymentPods(r), statefulSetPods(r)...)
	for _, p := range r.pdbs {
		sel := selectorOf(t, p.Spec.Selector)
		if sel == nil || !slices.ContainsFunc(pods, func(w namedPod) bool { return sel.matches(t, w.labels) }) {
			t.Errorf("PodDisruptionBudget %s selects no pod of the overlay", p.Name)
		}
	}
	for _, d := range deploymentPods(r) {
		var budgets []policyv1.PodDisruptionBudget
		for _, p := range r.pdbs {
			if sel := selectorOf(t, p.Spec.Selector); sel != nil && sel.matches(t, d.labels) {
				budgets = append(budgets, p)
			}
		}
		switch len(budgets) {
		case 0:
			t.Errorf("Deployment %s: no PodDisruptionBudget selects its pods; a drain may evict them all at once", d.name)
			continue
		case 1:
		default:
			var names []string
			for _, b := range budgets {
				names = append(names, b.Name)
			}
			t.Errorf("Deployment %s: PodDisruptionBudgets %v select its pods; the eviction API refuses a pod under more than one, so drains stall", d.name, names)
			continue
		}
		// At least one replica: KEDA starts a pool scaled to zero.
		replicas := 1
		if d.replicas != nil && *d.replicas > 1 {
			replicas = int(*d.replicas)
		}
		b := budgets[0].Spec
		allowed := 0
		switch {
		case b.MaxUnavailable != nil:
			allowed, _ = strconv.Atoi(b.MaxUnavailable.String())
		case b.MinAvailable != nil:
			if n, err := strconv.Atoi(b.MinAvailable.String()); err == nil {
				allowed = replicas - n
			}
		}
		if allowed < 1 || (replicas == 1 && b.MaxUnavailable == nil) {
			t.Errorf("Deployment %s (%d replica(s)): PodDisruptionBudget %s (maxUnavailable %v, minAvailable %v) allows no eviction and blocks node drains; want maxUnavailable: 1",
				d.name, replicas, budgets[0].Name, b.MaxUnavailable, b.MinAvailable)
		}
	}
}

// endpoint is one end of a connection: a pod (its namespace's labels, its
// own, its ports) or, with ip, an address outside the cluster.
type endpoint struct {
	desc      string
	namespace string
	nsLabels  map[string]string
	labels    map[string]string
	ports     []corev1.ContainerPort
	ip        string
}

// podEndpoint is a workload's pod in the overlay's namespace.
func podEndpoint(r rendered, p namedPod) endpoint {
	var ports []corev1.ContainerPort
	for _, c := range p.spec.Containers {
		ports = append(ports, c.Ports...)
	}
	return endpoint{desc: p.kind + " " + p.name, namespace: r.namespace, nsLabels: r.namespaceLabels, labels: p.labels, ports: ports}
}

// foreignPod is a pod in the namespace named ns (labelled with its name, as
// the API server labels every namespace).
func foreignPod(ns string, labels map[string]string, ports ...corev1.ContainerPort) endpoint {
	return endpoint{desc: "a pod in namespace " + ns, namespace: ns, nsLabels: map[string]string{"kubernetes.io/metadata.name": ns}, labels: labels, ports: ports}
}

// policyTypes are a policy's types as the API defaults them: Ingress, and
// Egress when it has egress rules.
func policyTypes(p networkingv1.NetworkPolicy) []networkingv1.PolicyType {
	if len(p.Spec.PolicyTypes) > 0 {
		return p.Spec.PolicyTypes
	}
	types := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	if len(p.Spec.Egress) > 0 {
		types = append(types, networkingv1.PolicyTypeEgress)
	}
	return types
}

func peerMatches(t *testing.T, r rendered, peer networkingv1.NetworkPolicyPeer, e endpoint) bool {
	if peer.IPBlock != nil {
		_, cidr, err := net.ParseCIDR(peer.IPBlock.CIDR)
		if err != nil || e.ip == "" || !cidr.Contains(net.ParseIP(e.ip)) {
			return false
		}
		for _, ex := range peer.IPBlock.Except {
			if _, n, err := net.ParseCIDR(ex); err == nil && n.Contains(net.ParseIP(e.ip)) {
				return false
			}
		}
		return true
	}
	if e.ip != "" {
		return false
	}
	ns, pod := selectorOf(t, peer.NamespaceSelector), selectorOf(t, peer.PodSelector)
	if ns == nil {
		// A pod selector alone selects in the policy's own namespace.
		return e.namespace == r.namespace && pod.matches(t, e.labels)
	}
	return ns.matches(t, e.nsLabels) && (pod == nil || pod.matches(t, e.labels))
}

// portMatches says whether traffic to port/proto on dst is one of ports; a
// named port is dst's container port of that name.
func portMatches(ports []networkingv1.NetworkPolicyPort, port int, proto corev1.Protocol, dst endpoint) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		pp := corev1.ProtocolTCP
		if p.Protocol != nil {
			pp = *p.Protocol
		}
		if pp != proto {
			continue
		}
		if p.Port == nil {
			return true
		}
		if n, err := strconv.Atoi(p.Port.String()); err == nil {
			end := n
			if p.EndPort != nil {
				end = int(*p.EndPort)
			}
			if port >= n && port <= end {
				return true
			}
			continue
		}
		for _, cp := range dst.ports {
			cpp := cp.Protocol
			if cpp == "" {
				cpp = corev1.ProtocolTCP
			}
			if cp.Name == p.Port.String() && int(cp.ContainerPort) == port && cpp == proto {
				return true
			}
		}
	}
	return false
}

// allows says whether the overlay's NetworkPolicies let src open port/proto
// on dst, on the side given (Ingress: dst's policies; Egress: src's). A pod
// no policy of that type selects is not isolated on that side; pods outside
// the overlay's namespace are not its policies' business.
func allows(t *testing.T, r rendered, side networkingv1.PolicyType, src, dst endpoint, port int, proto corev1.Protocol) bool {
	self, peer := dst, src
	if side == networkingv1.PolicyTypeEgress {
		self, peer = src, dst
	}
	if self.ip != "" || self.namespace != r.namespace {
		return true
	}
	isolated := false
	for _, p := range r.netpols {
		if !slices.Contains(policyTypes(p), side) || !selectorOf(t, &p.Spec.PodSelector).matches(t, self.labels) {
			continue
		}
		isolated = true
		if side == networkingv1.PolicyTypeIngress {
			for _, rule := range p.Spec.Ingress {
				if (len(rule.From) == 0 || slices.ContainsFunc(rule.From, func(f networkingv1.NetworkPolicyPeer) bool { return peerMatches(t, r, f, peer) })) &&
					portMatches(rule.Ports, port, proto, dst) {
					return true
				}
			}
		} else {
			for _, rule := range p.Spec.Egress {
				if (len(rule.To) == 0 || slices.ContainsFunc(rule.To, func(f networkingv1.NetworkPolicyPeer) bool { return peerMatches(t, r, f, peer) })) &&
					portMatches(rule.Ports, port, proto, dst) {
					return true
				}
			}
		}
	}
	return !isolated
}

// checkNetworkPolicies checks that a default-deny policy covers every pod of
// the namespace both ways, then evaluates the overlay's policies, as the
// NetworkPolicy API defines them, for each path Gyre needs and each it must
// not have.
func checkNetworkPolicies(t *testing.T, r rendered) {
	t.Helper()
	denyAll := slices.ContainsFunc(r.netpols, func(p networkingv1.NetworkPolicy) bool {
		sel := selectorOf(t, &p.Spec.PodSelector)
		return len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0 &&
			slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) && slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) &&
			len(p.Spec.Ingress) == 0 && len(p.Spec.Egress) == 0
	})
	if !denyAll {
		t.Errorf("namespace %s has no default-deny NetworkPolicy (podSelector {}, policyTypes Ingress and Egress, no rules): every path a policy does not open must be closed", r.namespace)
	}

	var nats endpoint
	var services []endpoint
	for _, p := range statefulSetPods(r) {
		if p.name == "nats" {
			nats = podEndpoint(r, p)
		}
	}
	for _, p := range deploymentPods(r) {
		services = append(services, podEndpoint(r, p))
	}
	if nats.labels == nil || len(services) == 0 {
		t.Fatal("no NATS StatefulSet or no Deployment to check the NetworkPolicies against")
	}
	dns := foreignPod("kube-system", map[string]string{"k8s-app": "kube-dns"},
		corev1.ContainerPort{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
		corev1.ContainerPort{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP})
	monitoring := foreignPod("monitoring", map[string]string{"app.kubernetes.io/name": "prometheus"})
	keda := foreignPod("keda", map[string]string{"app": "keda-operator"})
	ingress := foreignPod("ingress-nginx", map[string]string{"app.kubernetes.io/name": "ingress-nginx"})
	elsewhere := foreignPod("default", map[string]string{"app.kubernetes.io/part-of": "gyre"})
	tool := endpoint{desc: "another pod of the namespace", namespace: r.namespace, nsLabels: r.namespaceLabels, labels: map[string]string{"app": "debug"}}
	internet := endpoint{desc: "an address on the internet", ip: "203.0.113.10"}
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP

	type path struct {
		why      string
		src, dst endpoint
		port     int
		proto    corev1.Protocol
		// ingress and egress: whether each side allows it; the connection
		// opens when both do.
		ingress, egress bool
	}
	paths := []path{
		{"NATS nodes resolve their routes' names", nats, dns, 53, udp, true, true},
		{"NATS nodes route to each other", nats, nats, 6222, tcp, true, true},
		{"monitoring reads NATS's monitoring port", monitoring, nats, 8222, tcp, true, true},
		{"KEDA's scaler reads /jsz", keda, nats, 8222, tcp, true, true},
		{"the rest of the cluster does not reach NATS's monitoring", elsewhere, nats, 8222, tcp, false, true},
		{"a pod of another namespace, even labelled part-of=gyre, does not reach NATS", elsewhere, nats, 4222, tcp, false, true},
		{"another pod of the namespace does not reach NATS", tool, nats, 4222, tcp, false, false},
		{"another pod of the namespace reaches no further than DNS", tool, internet, 443, tcp, true, false},
		{"NATS has no way out", nats, internet, 443, tcp, true, false},
		{"NATS opens no connection to a service", nats, services[0], imagePort, tcp, true, false},
	}
	for i, s := range services {
		paths = append(paths,
			path{"a service resolves names", s, dns, 53, udp, true, true},
			path{"a service resolves names over TCP", s, dns, 53, tcp, true, true},
			path{"a service reaches NATS's client port", s, nats, 4222, tcp, true, true},
			path{"a service does not join NATS's cluster routes", s, nats, 6222, tcp, false, false},
			path{"a service does not read NATS's monitoring", s, nats, 8222, tcp, false, false},
			path{"a service reaches nothing outside", s, internet, 443, tcp, true, false},
			path{"a service calls no other service's HTTP port", s, services[(i+1)%len(services)], imagePort, tcp, true, false},
			path{"the ingress controller reaches the HTTP port", ingress, s, imagePort, tcp, true, true},
			path{"monitoring scrapes /metrics", monitoring, s, imagePort, tcp, true, true},
			path{"a tool in the namespace reaches the HTTP port (with an egress policy of its own)", tool, s, imagePort, tcp, true, false},
			path{"another namespace does not reach the HTTP port", elsewhere, s, imagePort, tcp, false, true},
			path{"the ingress controller reaches no other port", ingress, s, 9090, tcp, false, true},
		)
	}
	for _, p := range paths {
		in := allows(t, r, networkingv1.PolicyTypeIngress, p.src, p.dst, p.port, p.proto)
		out := allows(t, r, networkingv1.PolicyTypeEgress, p.src, p.dst, p.port, p.proto)
		if in != p.ingress || out != p.egress {
			t.Errorf("%s: %s -> %s port %d/%s: ingress allowed %v, egress allowed %v; want %v and %v",
				p.why, p.src.desc, p.dst.desc, p.port, p.proto, in, out, p.ingress, p.egress)
		}
	}
}

// checkNATSSeeds checks that each Gyre service's pod holds its own NATS
// identity and no other: GYRE_NATS_NKEY names a file of a read-only volume
// that maps the one key <service>.nk of Secret gyre-nats-seeds (both trainer
// pools are the trainer), a key `gyre auth config` makes; and that the
// service accepts the seed as the kubelet mounts it, whose fsGroup adds
// group read to a Secret's files whatever their mode (kubernetes#57923).
func checkNATSSeeds(t *testing.T, r rendered, auth natsAuth) {
	t.Helper()
	mounted := map[os.FileMode][]string{}
	for _, p := range deploymentPods(r) {
		if p.labels["app.kubernetes.io/part-of"] != "gyre" {
			continue
		}
		key := p.labels["app.kubernetes.io/name"] + natsauth.SeedExt
		if _, err := os.Stat(filepath.Join(auth.dir, key)); err != nil {
			t.Errorf("Deployment %s: seed %s is no identity `gyre auth config` makes: %v", p.name, key, err)
		}
		i := slices.IndexFunc(p.spec.Containers, func(c corev1.Container) bool { return c.Name == "service" })
		if i < 0 {
			continue // checkWorkloads reports it
		}
		c := p.spec.Containers[i]
		seed := ""
		for _, e := range c.Env {
			if e.Name == envNATSNkey && e.ValueFrom == nil {
				seed = e.Value
			}
		}
		if seed == "" {
			t.Errorf("Deployment %s sets no %s: it would connect to NATS without an identity, and be refused", p.name, envNATSNkey)
			continue
		}
		var refs []string
		var own *corev1.Volume
		for _, v := range p.spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == natsSeedsSecret {
				refs = append(refs, v.Name)
				own = &v
			}
			if v.Projected != nil && slices.ContainsFunc(v.Projected.Sources, func(s corev1.VolumeProjection) bool {
				return s.Secret != nil && s.Secret.Name == natsSeedsSecret
			}) {
				refs = append(refs, v.Name)
			}
		}
		if len(refs) != 1 || own == nil {
			t.Errorf("Deployment %s: volumes %v use Secret %s; want one secret volume with its own seed", p.name, refs, natsSeedsSecret)
			continue
		}
		m := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == own.Name })
		want := []corev1.KeyToPath{{Key: key, Path: path.Base(seed)}}
		items := own.Secret.Items
		if m < 0 || c.VolumeMounts[m].MountPath != path.Dir(seed) || !c.VolumeMounts[m].ReadOnly || len(items) != 1 ||
			items[0].Key != want[0].Key || items[0].Path != want[0].Path {
			t.Errorf("Deployment %s: %s=%s, volume %s (items %+v) mounted %+v; want only key %s at %s, mounted read-only",
				p.name, envNATSNkey, seed, own.Name, items, c.VolumeMounts[max(m, 0)], key, seed)
			continue
		}
		mode := os.FileMode(0o644) // the API's default
		if own.Secret.DefaultMode != nil {
			mode = os.FileMode(*own.Secret.DefaultMode)
		}
		if items[0].Mode != nil {
			mode = os.FileMode(*items[0].Mode)
		}
		if mode&0o077 != 0 {
			t.Errorf("Deployment %s: seed mode %#o; want 0400, the seed is a credential", p.name, mode)
		}
		sc := p.spec.SecurityContext
		if sc == nil || sc.FSGroup == nil {
			t.Errorf("Deployment %s: no fsGroup; the seed would be root's, mode %#o, and the service's user could not read it", p.name, mode)
			continue
		}
		eff := mode | 0o440
		mounted[eff] = append(mounted[eff], p.name)
	}
	// The file as the service finds it: root's, group fsGroup (the
	// service's own), mode with group read added.
	for mode, deployments := range mounted {
		f := filepath.Join(t.TempDir(), "seed.nk")
		b, err := os.ReadFile(filepath.Join(auth.dir, events.ServiceIngest+natsauth.SeedExt))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := natsauth.ReadSeed(f); err != nil {
			t.Errorf("Deployments %v: the kubelet mounts the seed with mode %#o, group fsGroup (it adds group read to a Secret's files whatever their mode, kubernetes#57923), and the service refuses it, so it cannot start (natsauth.ReadSeed must accept a group-readable seed, as libs/signing accepts the signing key): %v",
				slices.Sorted(slices.Values(deployments)), mode, err)
		}
	}
}
