package deployer

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/services/deployer/internal/serving"
)

// predictionLog publishes sampled predictions off the request path: a
// request hands them over without waiting (Offer), a worker publishes
// them. The queue is bounded; what does not fit is dropped and counted
// (gyre_deployer_prediction_logs_total{outcome="dropped"}), because serving
// must not slow down or fail when the event stream is slow or away.
type predictionLog struct {
	pub     *bus.Publisher
	queue   chan *gyrev1.PredictionLogged
	metrics *metrics
	logger  *slog.Logger
}

var _ serving.PredictionSink = (*predictionLog)(nil)

// publishBatch is how many queued events one publish round sends at once.
const publishBatch = 64

func newPredictionLog(pub *bus.Publisher, size int, m *metrics, logger *slog.Logger) *predictionLog {
	return &predictionLog{pub: pub, queue: make(chan *gyrev1.PredictionLogged, max(size, 1)), metrics: m, logger: logger}
}

// Offer queues msg unless the queue is full.
func (q *predictionLog) Offer(msg *gyrev1.PredictionLogged) bool {
	select {
	case q.queue <- msg:
		return true
	default:
		q.metrics.predictionLogs.WithLabelValues("dropped").Inc()
		return false
	}
}

// run publishes queued events until ctx ends, then what is left in the
// queue, within drain.
func (q *predictionLog) run(ctx context.Context, drain time.Duration) {
	for {
		select {
		case msg := <-q.queue:
			// Let the predictions of the next requests join this event,
			// unless a batch of them is queued already.
			if len(q.queue) < publishBatch-1 {
				select {
				case <-time.After(mergeWindow):
				case <-ctx.Done():
				}
			}
			msgs, counts := q.take(msg)
			q.publish(context.WithoutCancel(ctx), msgs, counts)
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
			defer cancel()
			for {
				select {
				case msg := <-q.queue:
					msgs, counts := q.take(msg)
					q.publish(dctx, msgs, counts)
				default:
					return
				}
			}
		}
	}
}

// take returns msg and whatever else is queued, up to publishBatch
// requests, the predictions of one model version and variant merged into
// one message of up to maxMergedRows rows: an event per request would cost
// the publisher and the server more than serving the request did. It also
// returns how many requests the messages carry.
func (q *predictionLog) take(first *gyrev1.PredictionLogged) ([]*gyrev1.PredictionLogged, []int) {
	msgs, counts := []*gyrev1.PredictionLogged{first}, []int{1}
	for n := 1; n < publishBatch; n++ {
		var m *gyrev1.PredictionLogged
		select {
		case m = <-q.queue:
		default:
			return msgs, counts
		}
		merged := false
		for i, into := range msgs {
			if mergeable(into, m) {
				into.Rows = append(into.Rows, m.Rows...)
				// The slowest request's latency speaks for the event.
				into.LatencyMs = max(into.LatencyMs, m.LatencyMs)
				counts[i]++
				merged = true
				break
			}
		}
		if !merged {
			msgs, counts = append(msgs, m), append(counts, 1)
		}
	}
	return msgs, counts
}

// mergeWindow is how long the predictions of a request wait for the next
// requests' to join their event: a few milliseconds more before a
// prediction is logged, much less publishing.
const mergeWindow = 5 * time.Millisecond

// maxMergedRows bounds the rows of a merged prediction.logged, so that it
// stays under the server's message size.
const maxMergedRows = 500

// mergeable reports whether b's rows can join a's event: same pipeline,
// model version, deployment, variant, sample rate and features.
func mergeable(a, b *gyrev1.PredictionLogged) bool {
	return a.GetPipeline() == b.GetPipeline() && a.GetModelVersion() == b.GetModelVersion() &&
		a.GetDeploymentId() == b.GetDeploymentId() && a.GetVariant() == b.GetVariant() &&
		a.GetSampleRate() == b.GetSampleRate() && slices.Equal(a.GetFeatures(), b.GetFeatures()) &&
		len(a.GetRows())+len(b.GetRows()) <= maxMergedRows
}

// publish sends the messages, counts[i] requests' predictions in msgs[i];
// the metrics count requests.
func (q *predictionLog) publish(ctx context.Context, msgs []*gyrev1.PredictionLogged, counts []int) {
	evs := make([]event.Event, 0, len(msgs))
	requests := 0
	for i, m := range msgs {
		ev, err := events.New(q.pub.Source(), m.GetPipeline(), m)
		if err != nil {
			q.metrics.predictionLogs.WithLabelValues("failed").Add(float64(counts[i]))
			q.logger.Error("prediction.logged not built", "pipeline", m.GetPipeline(), "error", err)
			continue
		}
		// The first prediction id names the event: a retried publish of
		// the same predictions is stored once. A shadow's predictions
		// share the ids of the answers they mirror, so their events are
		// named apart.
		if len(m.GetRows()) > 0 {
			parts := []string{events.PredictionLogged, m.GetPipeline(), m.GetRows()[0].GetPredictionId()}
			if m.GetVariant() == string(serving.Shadow) {
				parts = append(parts, m.GetVariant())
			}
			ev.SetID(bus.StableID(parts...))
		}
		ev.SetExtension(bus.ExtModelVersion, fmt.Sprint(m.GetModelVersion()))
		evs = append(evs, ev)
		requests += counts[i]
	}
	if len(evs) == 0 {
		return
	}
	if err := q.pub.PublishBatch(ctx, evs); err != nil {
		// PublishBatch names the events that failed; the rest are stored.
		q.metrics.predictionLogs.WithLabelValues("failed").Add(float64(requests))
		q.logger.Warn("prediction.logged publish failed; those predictions are not logged", "events", len(evs), "error", err)
		return
	}
	q.metrics.predictionLogs.WithLabelValues("published").Add(float64(requests))
}
