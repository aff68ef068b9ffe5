package tests

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
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
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
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
// Tilt's functions recorded.

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
	renders := map[string]rendered{}
	for _, overlay := range []string{"dev", "prod"} {
		t.Run("k8s/"+overlay, func(t *testing.T) {
			r := render(t, filepath.Join(root, "infra/k8s/overlays", overlay))
			renders[overlay] = r
			checkWorkloads(t, r, envs, overlay == "prod")
			checkReplicas(t, r)
			checkServices(t, r)
			checkNATS(t, r, overlay == "dev")
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
		if c.Image != wantImage {
			t.Errorf("Deployment %s: image %s, want %s", d.Name, c.Image, wantImage)
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

// checkNATS loads the overlay's NATS config as nats-server does and checks it
// against the StatefulSet; with run, it starts a server from it and
// provisions Gyre's whole topology there.
func checkNATS(t *testing.T, r rendered, run bool) {
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
	var cmName string
	for _, v := range ss.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
	}
	cm, ok := r.configMaps[cmName]
	if !ok || cm.Data["nats.conf"] == "" {
		t.Fatalf("StatefulSet nats mounts ConfigMap %q, which has no nats.conf", cmName)
	}
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte(cm.Data["nats.conf"]), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAME", ss.Name+"-0")
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server cannot load the overlay's nats.conf: %v", err)
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
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
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

	images := map[string]bool{}
	for _, d := range dev.deployments {
		images[d.Spec.Template.Spec.Containers[0].Image] = true
	}
	workloads := map[string]bool{}
	for _, d := range dev.deployments {
		workloads[d.Name] = true
	}
	for _, s := range dev.statefulsets {
		workloads[s.Name] = true
	}
	modules := goWorkModules(t, root)
	built := map[string]bool{}
	for _, c := range calls {
		switch c.fn {
		case "docker_build":
			ref := str(c.args, 0)
			built[ref] = true
			if !images[ref] {
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
			if w := str(c.args, 0); !workloads[w] {
				t.Errorf("k8s_resource(%q): the dev overlay has no such workload", w)
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
