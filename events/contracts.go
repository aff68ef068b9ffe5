package events

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strings"

	"github.com/gyrehq/gyre/events/gyrev1"
)

// The contract of every event of the catalog: what a consumer may rely on
// in its payload beyond its protobuf type. Each entry is keyed by the
// catalog name, and every catalog name has one (TestContractsCoverTheCatalog);
// every payload's first rule, added for all, is that its pipeline is a
// valid name (and DecodeDelivered adds that it is the subject's).
//
// What a rule demands follows from who relies on the field:
//
//   - required: what a consumer acts on (the ids and versions that name what
//     it acts on, the object it reads, the verdict it follows), and the
//     evidence of a trigger: a drift.detected or performance.degraded makes
//     the trainer retrain, so it must carry the measurement that justifies
//     it, consistent with itself (a degradation's drop is baseline minus
//     live and exceeds the tolerance);
//   - checked when set: the documented form of the other fields (enum-like
//     strings, shares and accuracies in [0, 1], percentages, hex digests),
//     so a field is never out of its documented set, while a producer that
//     leaves a descriptive field out is not refused for it;
//   - no rule: free text, figures and metrics maps, which consumers only
//     report.
//
// Paths are JSON names; "[]" applies a rule to each item of a list.
var contracts = map[string][]rule{
	PipelineApplied: {
		required("specJson"),
		across("json", "specJson is a JSON document", func(m *gyrev1.PipelineApplied) (string, string) {
			if !json.Valid([]byte(m.GetSpecJson())) {
				return "specJson", "not a JSON document"
			}
			return "", ""
		}),
		atLeast("revision", 1),
		sha256Hex("sha256", true),
		across("digest", "sha256, when set, is the SHA-256 of specJson", func(m *gyrev1.PipelineApplied) (string, string) {
			if m.GetSha256() == "" {
				return "", ""
			}
			sum := sha256.Sum256([]byte(m.GetSpecJson()))
			if got := hex.EncodeToString(sum[:]); got != m.GetSha256() {
				return "sha256", fmt.Sprintf("%s, but specJson's SHA-256 is %s", m.GetSha256(), got)
			}
			return "", ""
		}),
	},
	DataBatchArrived: {
		identifier("batchId"),
		oneOf("format", batchFormats...),
		across("source", "exactly one of uri (file:///abs/path or nats-object://BUCKET/KEY) and content",
			func(m *gyrev1.DataBatchArrived) (string, string) {
				uri, content := m.GetUri(), m.GetContent()
				switch {
				case uri == "" && len(content) == 0:
					return "uri", "empty, and so is content; give the batch as a uri or inline as content"
				case uri != "" && len(content) > 0:
					return "content", "set together with uri; give exactly one of uri and content"
				case uri != "":
					return "uri", batchURIProblem(uri)
				}
				return "", ""
			}),
	},
	DataBatchReceived: {
		identifier("batchId"),
		across("stored", "object.key is set unless the batch is a duplicate", func(m *gyrev1.DataBatchReceived) (string, string) {
			if !m.GetDuplicate() && m.GetObject().GetKey() == "" {
				return "object.key", "empty; a received batch is stored"
			}
			return "", ""
		}),
		sha256Hex("sha256", true),
		oneOf("format", batchFormats...),
		atLeast("rows", 0),
		atLeast("bytes", 0),
	},
	DataBatchValidated: {
		identifier("batchId"),
		required("object.key"),
		oneOf("format", batchFormats...),
		atLeast("rows", 0),
		required("columns[].name"),
		atLeast("pipelineRevision", 0),
		atLeast("rowsIn", 0),
		atLeast("rowsQuarantined", 0),
	},
	DataBatchRejected: {
		identifier("batchId"),
		atLeast("rows", 0),
		atLeast("reasonsTotal", 0),
		across("reasons", "reasonsTotal counts at least the reasons listed", func(m *gyrev1.DataBatchRejected) (string, string) {
			if n := len(m.GetReasons()); m.GetReasonsTotal() < int64(n) {
				return "reasonsTotal", fmt.Sprintf("%d, fewer than the %d reasons listed", m.GetReasonsTotal(), n)
			}
			return "", ""
		}),
	},
	FeaturesMaterialized: {
		identifier("batchId"),
		required("featureSetVersion"),
		required("source.key"),
		atLeast("rows", 0),
		atLeast("onlineRowsWritten", 0),
		oneOfOrEmpty("onlineStore", "jetstream-kv", "redis"),
		required("columns[].name"),
		oneOf("columns[].transform", "identity", "standardize", "minmax", "log1p", "onehot", "bucketize"),
	},
	DriftMeasured: {
		identifier("batchId"),
		atLeast("referenceModelVersion", 0),
		oneOfOrEmpty("method", driftMethods...),
		required("features[].feature"),
		oneOfOrEmpty("features[].method", driftTests...),
		between("shareDrifted", 0, 1),
		between("shareThreshold", 0, 1),
		atLeast("rows", 0),
	},
	DriftDetected: {
		identifier("batchId"),
		atLeast("referenceModelVersion", 1),
		oneOf("method", driftMethods...),
		required("features[].feature"),
		oneOfOrEmpty("features[].method", driftTests...),
		required("driftedFeatures"),
		between("shareDrifted", 0, 1),
		between("shareThreshold", 0, 1),
		across("crossed", "shareDrifted >= shareThreshold: the policy was crossed", func(m *gyrev1.DriftDetected) (string, string) {
			if m.GetShareDrifted() < m.GetShareThreshold() {
				return "shareDrifted", fmt.Sprintf("%g, under shareThreshold %g: no drift to act on", m.GetShareDrifted(), m.GetShareThreshold())
			}
			return "", ""
		}),
		across("drifted", "each of driftedFeatures is a feature marked drifted", func(m *gyrev1.DriftDetected) (string, string) {
			drifted := map[string]bool{}
			for _, f := range m.GetFeatures() {
				drifted[f.GetFeature()] = f.GetDrifted()
			}
			for i, name := range m.GetDriftedFeatures() {
				if !drifted[name] {
					return fmt.Sprintf("driftedFeatures[%d]", i), fmt.Sprintf("%q is not among the features marked drifted", name)
				}
			}
			return "", ""
		}),
		atLeast("rows", 1),
	},
	PerformanceDegraded: {
		atLeast("modelVersion", 1),
		oneOf("metric", "accuracy"),
		between("baselineAccuracy", 0, 1),
		between("liveAccuracy", 0, 1),
		between("maxDrop", 0, 1),
		across("drop", "drop = baselineAccuracy - liveAccuracy, and drop > maxDrop", func(m *gyrev1.PerformanceDegraded) (string, string) {
			want := m.GetBaselineAccuracy() - m.GetLiveAccuracy()
			switch {
			case math.IsNaN(m.GetDrop()) || math.Abs(m.GetDrop()-want) > 1e-9:
				return "drop", fmt.Sprintf("%g, but baselineAccuracy - liveAccuracy is %g", m.GetDrop(), want)
			case m.GetDrop() <= m.GetMaxDrop():
				return "drop", fmt.Sprintf("%g, within maxDrop %g: nothing degraded", m.GetDrop(), m.GetMaxDrop())
			}
			return "", ""
		}),
		atLeast("labelledRows", 1),
		atLeast("predictions", 0),
	},
	TrainingRequested: {
		// A manual request (any client, on gyre.ev) may name only its
		// pipeline and reason; what a job needs beyond is checked on the
		// job subject (DecodeDelivered).
		oneOf("reason", trainingReasons...),
		oneOfOrEmpty("algorithm", algorithms...),
		poolName("pool", true),
		required("window[].batchId"),
		required("window[].object.key"),
		oneOf("window[].format", batchFormats...),
		atLeast("pipelineRevision", 0),
	},
	TrainingStarted: {
		identifier("requestId"),
		required("jobId"),
		poolName("pool", true),
		atLeast("attempt", 1),
		atLeast("rows", 0),
	},
	TrainingCompleted: {
		identifier("requestId"),
		required("artifact.key"),
		atLeast("attempt", 0),
		oneOfOrEmpty("algorithm", algorithms...),
		atLeast("durationMs", 0),
		atLeast("trainRows", 0),
		atLeast("testRows", 0),
	},
	TrainingFailed: {
		identifier("requestId"),
		required("error"),
		atLeast("attempt", 0),
		atLeast("durationMs", 0),
	},
	ModelEvaluated: {
		identifier("requestId"),
		required("candidateArtifact.key"),
		atLeast("championVersion", 0),
		atLeast("championAtEvaluation", 0),
		atLeast("evalRows", 0),
		required("gates[].metric"),
		oneOf("gates[].kind", gateKinds...),
		oneOf("verdict", verdicts...),
		across("verdict", "blessed only when every gate passed and the candidate has metrics", func(m *gyrev1.ModelEvaluated) (string, string) {
			if m.GetVerdict() != verdictBlessed {
				return "", ""
			}
			if len(m.GetCandidateMetrics()) == 0 {
				return "verdict", "blessed, but the candidate has no metrics"
			}
			for i, g := range m.GetGates() {
				if !g.GetPassed() {
					return "verdict", fmt.Sprintf("blessed, but gates[%d] (%s %s) failed", i, g.GetMetric(), g.GetKind())
				}
			}
			return "", ""
		}),
	},
	ModelRegistered: {
		atLeast("modelVersion", 1),
		oneOf("verdict", verdicts...),
		required("artifact.key"),
	},
	ModelPromoted: {
		atLeast("modelVersion", 1),
		required("alias"),
		atLeast("generation", 1),
		atLeast("previousVersion", 0),
		oneOfOrEmpty("reason", "blessed", "manual", "rollback", "rolledback"),
	},
	DeploymentStarted: {
		required("deploymentId"),
		atLeast("modelVersion", 1),
		atLeast("previousVersion", 0),
		oneOf("strategy", strategies...),
		between("steps[]", 0, 100),
		required("artifact.key"),
		oneOf("reason", "promoted", "manual", "rollback", "rolledback"),
		atLeast("generation", 0),
	},
	DeploymentProgressed: {
		required("deploymentId"),
		atLeast("modelVersion", 1),
		atLeast("previousVersion", 0),
		oneOf("strategy", "canary", "blue-green"),
		atLeast("step", 1),
		between("trafficPercent", 0, 100),
		atLeast("generation", 0),
	},
	DeploymentCompleted: {
		required("deploymentId"),
		atLeast("modelVersion", 1),
		atLeast("previousVersion", 0),
		oneOfOrEmpty("strategy", strategies...),
		between("trafficPercent", 0, 100),
		atLeast("durationMs", 0),
		atLeast("generation", 0),
	},
	DeploymentRolledBack: {
		required("deploymentId"),
		atLeast("modelVersion", 1),
		atLeast("previousVersion", 0),
		oneOfOrEmpty("strategy", strategies...),
		atLeast("step", 0),
		between("trafficPercent", 0, 100),
		atLeast("generation", 0),
	},
	PredictionLogged: {
		atLeast("modelVersion", 1),
		oneOf("variant", "champion", "canary", "shadow"),
		above("sampleRate", 0, 1),
		required("rows[].predictionId"),
		atLeast("latencyMs", 0),
	},
	LabelReceived: {
		required("labels"),
		required("labels[].predictionId"),
	},
}

// Enum-like values shared by several payloads.
var (
	batchFormats    = []string{FormatCSV, FormatJSONL, FormatParquet}
	driftMethods    = []string{"psi", "ks", "wasserstein", "jensenshannon", "chisquare", "z", "auto"}
	driftTests      = []string{"psi", "ks", "wasserstein", "jensenshannon", "chisquare", "z"}
	trainingReasons = []string{"bootstrap", "new-data", "drift", "performance", "manual", "schedule"}
	algorithms      = []string{"logreg", "gbdt", "mlp", "command"}
	gateKinds       = []string{"min", "max", "minDeltaVsChampion", "maxDeltaVsChampion"}
	verdicts        = []string{verdictBlessed, verdictRejected}
	strategies      = []string{"immediate", "canary", "shadow", "blue-green"}
)

// Verdicts of an evaluation (ModelEvaluated.verdict, ModelRegistered.verdict).
const (
	verdictBlessed  = "blessed"
	verdictRejected = "rejected"
)

// batchURIProblem says what is wrong with a batch uri, "" when nothing is.
func batchURIProblem(uri string) string {
	if strings.HasPrefix(uri, ObjectURIScheme+"://") {
		if _, _, err := ParseObjectURI(uri); err != nil {
			return err.Error()
		}
		return ""
	}
	u, err := url.Parse(uri)
	switch {
	case err != nil:
		return fmt.Sprintf("%q is not a URI", uri)
	case u.Scheme != "file":
		return fmt.Sprintf("scheme of %q is not supported; want file:///path or %s://BUCKET/KEY", uri, ObjectURIScheme)
	case u.Host != "" && u.Host != "localhost":
		return fmt.Sprintf("%q names host %q; file URIs must be local (file:///path)", uri, u.Host)
	case !strings.HasPrefix(u.Path, "/") || u.Path == "/":
		return fmt.Sprintf("%q has no absolute file path (want file:///path)", uri)
	}
	return ""
}
