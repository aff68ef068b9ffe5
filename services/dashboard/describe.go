package dashboard

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	gyrev1 "github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/models"
)

// describe says in one line what an event means, with the figures that
// decided it, and how the feed should colour it.
func describe(name string, payload proto.Message) (summary, tone string) {
	switch m := payload.(type) {
	case *gyrev1.PipelineApplied:
		return fmt.Sprintf("pipeline spec applied (revision %d)", m.GetRevision()), ToneInfo
	case *gyrev1.DataBatchArrived:
		return fmt.Sprintf("batch %s arrived (%s)", orDash(m.GetBatchId()), orDash(m.GetFormat())), ToneInfo
	case *gyrev1.DataBatchReceived:
		if m.GetDuplicate() {
			return fmt.Sprintf("batch %s received again: a duplicate, not processed twice", m.GetBatchId()), ToneWarn
		}
		return fmt.Sprintf("batch %s received: %d rows, %s", m.GetBatchId(), m.GetRows(), bytesText(m.GetBytes())), ToneInfo
	case *gyrev1.DataBatchValidated:
		label := ""
		if m.GetLabelled() {
			label = ", labelled"
		}
		return fmt.Sprintf("batch %s valid: %d rows, %d columns%s", m.GetBatchId(), m.GetRows(), len(m.GetColumns()), label), ToneGood
	case *gyrev1.DataBatchRejected:
		return fmt.Sprintf("batch %s rejected: %s", m.GetBatchId(), rejectReason(m)), ToneBad
	case *gyrev1.FeaturesMaterialized:
		return fmt.Sprintf("features of batch %s materialized: %d rows, feature set %s", m.GetBatchId(), m.GetRows(), short(m.GetFeatureSetVersion())), ToneInfo
	case *gyrev1.DriftMeasured:
		if m.GetReferenceModelVersion() == 0 {
			return fmt.Sprintf("batch %s not compared: no champion to compare with yet", m.GetBatchId()), ToneInfo
		}
		verdict := "no drift"
		tone := ToneGood
		switch {
		case m.GetDrifted():
			verdict, tone = "drifted", ToneWarn
		case m.GetRows() < m.GetMinRows():
			verdict = fmt.Sprintf("not judged: %d rows, fewer than the %d the policy needs", m.GetRows(), m.GetMinRows())
			tone = ToneInfo
		}
		return fmt.Sprintf("drift on batch %s: %s of features (threshold %s), %s", m.GetBatchId(),
			percent(m.GetShareDrifted()), percent(m.GetShareThreshold()), verdict), tone
	case *gyrev1.DriftDetected:
		return fmt.Sprintf("drift detected on batch %s: %s drifted (%s of features)", m.GetBatchId(),
			strings.Join(m.GetDriftedFeatures(), ", "), percent(m.GetShareDrifted())), ToneWarn
	case *gyrev1.PerformanceDegraded:
		return fmt.Sprintf("model %d: live %s %.3f against %.3f at training (drop %.3f > %.3f, %d labelled rows)",
			m.GetModelVersion(), orDash(m.GetMetric()), m.GetLiveAccuracy(), m.GetBaselineAccuracy(), m.GetDrop(),
			m.GetMaxDrop(), m.GetLabelledRows()), ToneBad
	case *gyrev1.TrainingRequested:
		return fmt.Sprintf("training requested: %s (%s on pool %s)", orDash(m.GetReason()), orDash(m.GetAlgorithm()), orDash(m.GetPool())), ToneInfo
	case *gyrev1.TrainingStarted:
		return fmt.Sprintf("training started on %s (pool %s, attempt %d): %d rows", orDash(m.GetWorker()), orDash(m.GetPool()), m.GetAttempt(), m.GetRows()), ToneInfo
	case *gyrev1.TrainingCompleted:
		return fmt.Sprintf("training completed in %s: %s", millis(m.GetDurationMs()), metricsText(m.GetMetrics())), ToneGood
	case *gyrev1.TrainingFailed:
		retry := "not retried"
		if m.GetRetryable() {
			retry = "will be retried"
		}
		return fmt.Sprintf("training failed (attempt %d, %s): %s", m.GetAttempt(), retry, m.GetError()), ToneBad
	case *gyrev1.ModelEvaluated:
		tone := ToneGood
		if m.GetVerdict() != models.VerdictBlessed {
			tone = ToneWarn
		}
		against := m.GetChampionVersion()
		if m.ChampionAtEvaluation != nil {
			against = m.GetChampionAtEvaluation()
		}
		return fmt.Sprintf("candidate evaluated: %s (%s) against champion %s", orDash(m.GetVerdict()), orDash(m.GetReason()),
			versionText(against)), tone
	case *gyrev1.ModelRegistered:
		return fmt.Sprintf("model %d registered (%s): %s", m.GetModelVersion(), orDash(m.GetVerdict()), metricsText(m.GetMetrics())), ToneInfo
	case *gyrev1.ModelPromoted:
		text := fmt.Sprintf("model %d is %s (was %s): %s", m.GetModelVersion(), orDash(m.GetAlias()),
			versionText(m.GetPreviousVersion()), orDash(m.GetReason()))
		if c := m.GetCause(); c != "" {
			// A rollback says why: the deployer's reason, or who asked.
			return text + " — " + c, ToneBad
		}
		return text, ToneGood
	case *gyrev1.DeploymentStarted:
		return fmt.Sprintf("%s rollout of model %d started (serving %s)%s", orDash(m.GetStrategy()), m.GetModelVersion(),
			versionText(m.GetPreviousVersion()), stepsText(m.GetSteps())), ToneInfo
	case *gyrev1.DeploymentProgressed:
		return fmt.Sprintf("%s step %d: model %d takes %d%% of traffic%s", orDash(m.GetStrategy()), m.GetStep(),
			m.GetModelVersion(), m.GetTrafficPercent(), figuresText(m.GetFigures())), ToneInfo
	case *gyrev1.DeploymentCompleted:
		return fmt.Sprintf("model %d serves all traffic (%s, %s)%s", m.GetModelVersion(), orDash(m.GetStrategy()),
			millis(m.GetDurationMs()), figuresText(m.GetFigures())), ToneGood
	case *gyrev1.DeploymentRolledBack:
		return fmt.Sprintf("model %d rolled back at step %d: %s; model %s serves%s", m.GetModelVersion(), m.GetStep(),
			orDash(m.GetReason()), versionText(m.GetPreviousVersion()), figuresText(m.GetFigures())), ToneBad
	case *gyrev1.LabelReceived:
		return fmt.Sprintf("%d labels received", len(m.GetLabels())), ToneInfo
	case nil:
		return name + " (payload not readable)", ToneWarn
	}
	return name, ToneInfo
}

// rejectReason is the first reason a batch was rejected for, and how many
// more there were.
func rejectReason(m *gyrev1.DataBatchRejected) string {
	rs := m.GetReasons()
	if len(rs) == 0 {
		return "no reason given"
	}
	r := rs[0]
	var b strings.Builder
	if r.GetColumn() != "" {
		fmt.Fprintf(&b, "column %s", r.GetColumn())
		if r.GetRow() > 0 {
			fmt.Fprintf(&b, ", row %d", r.GetRow())
		}
		b.WriteString(": ")
	}
	b.WriteString(orDash(r.GetMessage()))
	if more := max(m.GetReasonsTotal(), int64(len(rs))) - 1; more > 0 {
		fmt.Fprintf(&b, " (and %d more)", more)
	}
	return b.String()
}

func metricsText(m map[string]float64) string {
	if len(m) == 0 {
		return "no metrics"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+" "+strconv.FormatFloat(m[k], 'g', 4, 64))
	}
	return strings.Join(parts, ", ")
}

func figuresText(m map[string]float64) string {
	if len(m) == 0 {
		return ""
	}
	return "; " + metricsText(m)
}

func stepsText(steps []int32) string {
	if len(steps) == 0 {
		return ""
	}
	parts := make([]string, len(steps))
	for i, s := range steps {
		parts[i] = strconv.Itoa(int(s)) + "%"
	}
	return ", steps " + strings.Join(parts, " → ")
}

func versionText(v int64) string {
	if v <= 0 {
		return "none"
	}
	return strconv.FormatInt(v, 10)
}

func percent(f float64) string { return strconv.FormatFloat(100*f, 'f', 0, 64) + "%" }

func millis(ms int64) string {
	if ms < 1000 {
		return strconv.FormatInt(ms, 10) + " ms"
	}
	return strconv.FormatFloat(float64(ms)/1000, 'f', 1, 64) + " s"
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return orDash(s)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
