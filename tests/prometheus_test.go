package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
)

// The Prometheus deploy files under infra/prometheus are checked twice:
// promtool validates the configuration and the rules and runs the rules' unit
// tests, and every metric the rules name is looked for in a real scrape of
// `gyre up`, so that a rule never watches a metric no service exports.

// promDir holds prometheus.yml, gyre-rules.yml and gyre-rules.test.yml.
const promDir = "../infra/prometheus"

// promtool returns the promtool to run: $GYRE_PROMTOOL, else promtool on
// PATH (see requireTool).
func promtool(t *testing.T) string {
	t.Helper()
	return requireTool(t, "GYRE_PROMTOOL", "promtool", "apt-get install prometheus")
}

// requireTool returns the path of a program a test runs: $env, else name
// on PATH. Without one the test is skipped with a hint, except in CI (CI
// set), where it fails: CI must run what the test checks.
func requireTool(t *testing.T, env, name, pkg string) string {
	t.Helper()
	if v := os.Getenv(env); v != "" {
		name = v
	}
	path, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s is not available (%v); install it with scripts/install-bench-deps.sh (%s) or set %s", name, err, pkg, env)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

func TestPrometheusPromtool(t *testing.T) {
	t.Parallel()
	bin := promtool(t)
	dir, err := filepath.Abs(promDir)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		// dir returns the directory to run in; nil means dir.
		dir func(t *testing.T) string
	}{
		{"check config", []string{"check", "config", "prometheus.yml"}, func(t *testing.T) string { return promConfigDir(t, bin, dir) }},
		{"check rules", []string{"check", "rules", "gyre-rules.yml"}, nil},
		{"test rules", []string{"test", "rules", "gyre-rules.test.yml"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(bin, c.args...)
			cmd.Dir = dir
			if c.dir != nil {
				cmd.Dir = c.dir(t)
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s in %s: %v\n%s", strings.Join(c.args, " "), cmd.Dir, err, out)
			}
			t.Logf("promtool %s:\n%s", strings.Join(c.args, " "), bytes.TrimSpace(out))
		})
	}
}

// promConfigDir returns where to check prometheus.yml: dir itself when
// promtool knows Kubernetes service discovery. Debian's promtool is built
// without it and rejects kubernetes_sd_configs as an unknown field; then the
// check runs on a copy whose kubernetes_sd_configs block is replaced by
// static_configs, so that everything else (the relabelling above all) is
// still checked.
func promConfigDir(t *testing.T, bin, dir string) string {
	t.Helper()
	if promtoolHasKubernetesSD(t, bin) {
		return dir
	}
	src, err := os.ReadFile(filepath.Join(dir, "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, ok := promReplaceBlock(string(src), "kubernetes_sd_configs:", []string{
		"static_configs:",
		"  - targets: [\"127.0.0.1:8080\"]",
	})
	if !ok {
		t.Fatal("prometheus.yml has no kubernetes_sd_configs block")
	}
	tmp := t.TempDir()
	if err := os.WriteFile(filepath.Join(tmp, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// check config checks the rule files too; they are relative to the config.
	rules, err := os.ReadFile(filepath.Join(dir, "gyre-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "gyre-rules.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s has no Kubernetes service discovery (Debian builds it without); checking prometheus.yml with static_configs in place of kubernetes_sd_configs. Set GYRE_PROMTOOL to an upstream promtool to check that block too.", bin)
	return tmp
}

// promtoolHasKubernetesSD reports whether bin accepts kubernetes_sd_configs.
func promtoolHasKubernetesSD(t *testing.T, bin string) bool {
	t.Helper()
	dir := t.TempDir()
	probe := "scrape_configs:\n  - job_name: probe\n    kubernetes_sd_configs:\n      - role: pod\n"
	if err := os.WriteFile(filepath.Join(dir, "probe.yml"), []byte(probe), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check", "config", filepath.Join(dir, "probe.yml")).CombinedOutput()
	return err == nil || !strings.Contains(string(out), "field kubernetes_sd_configs not found")
}

// promReplaceBlock replaces the first line whose trimmed text is key, and
// the more indented lines under it, by with, indented as key was.
func promReplaceBlock(text, key string, with []string) (string, bool) {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != key {
			continue
		}
		indent := l[:len(l)-len(strings.TrimLeft(l, " "))]
		end := i + 1
		for end < len(lines) && (strings.TrimSpace(lines[end]) == "" || promIndent(lines[end]) > len(indent)) {
			end++
		}
		repl := make([]string, len(with))
		for j, w := range with {
			repl[j] = indent + w
		}
		return strings.Join(slices.Concat(lines[:i], repl, lines[end:]), "\n"), true
	}
	return text, false
}

func promIndent(line string) int { return len(line) - len(strings.TrimLeft(line, " ")) }

// TestPrometheusRulesUseExportedMetrics runs the loop once in `gyre up` (a
// pipeline trained and deployed, an inference served and logged, a malformed
// message dead-lettered: what makes every labelled series exist), scrapes
// /metrics, and requires every metric gyre-rules.yml names — in expressions,
// and gyre_* names in its comments and annotations — to be there, with the
// labels the expressions match or group on. It also requires each
// CloudEvents type a rule matches to be in the event catalog.
func TestPrometheusRulesUseExportedMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("builds gyre and runs the loop once")
	}
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(promDir, "gyre-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	rules := string(raw)
	exprs := promRuleExprs(t, rules)
	recorded := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*- record:\s*(\S+)\s*$`).FindAllStringSubmatch(rules, -1) {
		recorded[m[1]] = true
	}
	refs := promqlRefs{metrics: map[string]bool{}, labels: map[string]bool{}, types: map[string]bool{}}
	for _, e := range exprs {
		refs.add(e)
	}
	// gyre_* names anywhere else (annotations point at metrics too); a
	// recording rule's name holds one but is not one.
	for _, m := range regexp.MustCompile(`(?:^|[^\w:])(gyre_[a-z0-9_]*[a-z0-9])\b([^:]|$)`).FindAllStringSubmatch(rules, -1) {
		refs.metrics[m[1]] = true
	}
	for ceType := range refs.types {
		if _, ok := events.LookupType(ceType); !ok {
			t.Errorf("gyre-rules.yml matches type=%q, which is not in the event catalog", ceType)
		}
	}
	var want []string
	for name := range refs.metrics {
		switch {
		case strings.Contains(name, ":"):
			if !recorded[name] {
				t.Errorf("gyre-rules.yml uses %s, which no rule records", name)
			}
		case name == "up":
			// Prometheus writes up for every target it scrapes.
		default:
			want = append(want, name)
		}
	}
	slices.Sort(want)

	scraped := promScrapeLoop(t, want)
	var missing []string
	for _, name := range want {
		if _, ok := scraped[name]; !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		have := make([]string, 0, len(scraped))
		for name := range scraped {
			if strings.HasPrefix(name, "gyre_") {
				have = append(have, name)
			}
		}
		slices.Sort(have)
		t.Errorf("gyre-rules.yml names metrics no service exported: %v\nexported gyre_* series: %v", missing, have)
	}
	// Labels: what the scraped series carry, and the target labels
	// prometheus.yml sets.
	known := map[string]bool{"job": true, "instance": true, "namespace": true, "pool": true}
	for _, labels := range scraped {
		for l := range labels {
			known[l] = true
		}
	}
	for l := range refs.labels {
		if !known[l] {
			t.Errorf("gyre-rules.yml matches or groups on label %q, which neither the scraped series nor prometheus.yml's target labels have", l)
		}
	}
	if !t.Failed() {
		t.Logf("the rules' %d metrics, all exported: %v", len(want), want)
	}
}

// promScrapeLoop starts `gyre up` against the test server, drives the loop
// until every series in want can exist, and returns what /metrics serves:
// the series names (histograms as _bucket, _sum and _count) and their label
// names. It polls until want is all there or a deadline passes.
func promScrapeLoop(t *testing.T, want []string) map[string]map[string]bool {
	t.Helper()
	js, httpURL, upDir := upOnServer(t)
	admin, err := os.ReadFile(filepath.Join(upDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A pipeline trained and deployed.
	feedElec2(ctx, t, js)
	waitEvent(t, js, "elec2", events.DeploymentCompleted, 2*time.Minute)

	// An inference (gyre_deployer_infer_*), whose prediction is logged
	// (gyre_deployer_prediction_logs_total). The deployer may take a moment
	// to load what it announced.
	body, err := json.Marshal(map[string]any{"inputs": []map[string]any{
		{"name": "period", "datatype": "FP64", "shape": []int{1}, "data": []float64{0.5}},
		{"name": "nswprice", "datatype": "FP64", "shape": []int{1}, "data": []float64{0.05}},
		{"name": "nswdemand", "datatype": "FP64", "shape": []int{1}, "data": []float64{0.4}},
		{"name": "vicprice", "datatype": "FP64", "shape": []int{1}, "data": []float64{0.003}},
		{"name": "vicdemand", "datatype": "FP64", "shape": []int{1}, "data": []float64{0.4}},
		{"name": "transfer", "datatype": "FP64", "shape": []int{1}, "data": []float64{0.4}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for {
		req, _ := http.NewRequest(http.MethodPost, httpURL+"/services/deployer/v2/models/elec2/infer", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(admin)))
		resp, err := client.Do(req)
		if err == nil {
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			err = fmt.Errorf("%s: %s", resp.Status, msg)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("inference on elec2: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}

	// A message that is no CloudEvent: ingest dead-letters it as malformed
	// (gyre_bus_dead_letters_total appears at the first dead letter).
	subject, err := events.Subject("elec2", events.DataBatchArrived)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, subject, []byte("not a CloudEvent")); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		scraped, err := promScrape(client, httpURL+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) || !slices.ContainsFunc(want, func(name string) bool { return scraped[name] == nil }) {
			return scraped
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// promScrape reads the Prometheus text format at url: each series name
// with the label names its samples carry.
func promScrape(client *http.Client, url string) (map[string]map[string]bool, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	labelRE := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)
	out := map[string]map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// name{label="value",...} value, or name value.
		name, labels := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
			if line[i] == '{' {
				labels = line[i:strings.LastIndexByte(line, '}')]
			}
		}
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for _, m := range labelRE.FindAllStringSubmatch(labels, -1) {
			out[name][m[1]] = true
		}
	}
	return out, sc.Err()
}

// promRuleExprs returns the expressions of a rule file written as
// gyre-rules.yml is: `expr: <one line>`, or `expr: |` (or >) and a more
// indented block. It fails the test unless it found one per rule, so that a
// change of layout cannot make it read less than everything.
func promRuleExprs(t *testing.T, text string) []string {
	t.Helper()
	lines := strings.Split(text, "\n")
	var exprs []string
	for i, l := range lines {
		trimmed := strings.TrimSpace(l)
		if !strings.HasPrefix(trimmed, "expr:") {
			continue
		}
		rest := strings.TrimSpace(strings.TrimPrefix(trimmed, "expr:"))
		if rest != "" && !strings.ContainsAny(rest[:1], "|>") {
			exprs = append(exprs, rest)
			continue
		}
		var block []string
		for _, b := range lines[i+1:] {
			if strings.TrimSpace(b) != "" && promIndent(b) <= promIndent(l) {
				break
			}
			block = append(block, b)
		}
		exprs = append(exprs, strings.Join(block, "\n"))
	}
	rules := len(regexp.MustCompile(`(?m)^\s*- (?:record|alert):`).FindAllString(text, -1))
	if len(exprs) != rules || rules == 0 {
		t.Fatalf("read %d expressions in %d rules", len(exprs), rules)
	}
	return exprs
}

// promqlRefs are what PromQL expressions refer to: metric names (recorded
// ones included), label names in matchers and in by/without/on/ignoring/
// group_* clauses, and the values matched on type (CloudEvents types).
type promqlRefs struct {
	metrics, labels, types map[string]bool
}

var (
	promSelectorRE = regexp.MustCompile(`([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}`)
	promMatcherRE  = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	promRangeRE    = regexp.MustCompile(`\[[^\]]*\]`)
	promGroupingRE = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	// An identifier not inside a number (1e6, 30m) and what follows it: a
	// parenthesis makes it a function or an aggregation.
	promIdentRE = regexp.MustCompile(`(?:^|[^A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?`)
)

// promqlKeywords are the identifiers of PromQL that are not series.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "offset": true, "bool": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
}

// add records what expr refers to. It is no PromQL parser, but enough for
// the selectors, aggregations and binary operators of gyre-rules.yml.
func (r promqlRefs) add(expr string) {
	expr = promSelectorRE.ReplaceAllStringFunc(expr, func(sel string) string {
		m := promSelectorRE.FindStringSubmatch(sel)
		for _, mm := range promMatcherRE.FindAllStringSubmatch(m[2], -1) {
			r.labels[mm[1]] = true
			if mm[1] == "type" {
				r.types[mm[2]] = true
			}
		}
		return " " + m[1] + " "
	})
	expr = promRangeRE.ReplaceAllString(expr, " ")
	expr = promGroupingRE.ReplaceAllStringFunc(expr, func(g string) string {
		for _, l := range strings.Split(promGroupingRE.FindStringSubmatch(g)[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				r.labels[l] = true
			}
		}
		return " "
	})
	for _, m := range promIdentRE.FindAllStringSubmatch(expr, -1) {
		if m[2] != "" || promqlKeywords[m[1]] {
			continue
		}
		r.metrics[m[1]] = true
	}
}
