package deployer

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
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
	queue   chan *serving.PredictionRecord
	metrics *metrics
	logger  *slog.Logger
}

var _ serving.PredictionSink = (*predictionLog)(nil)

// roundRows bounds the rows one publish round takes from the queue: enough
// that a round keeps up with any request rate one deployer serves (each
// round waits for the server's acknowledgements), few enough that its
// events go out in one PublishBatch.
const roundRows = 16 * maxMergedRows

// lingerQueued is the number of queued requests at which a round starts
// without waiting mergeWindow for more.
const lingerQueued = 64

func newPredictionLog(pub *bus.Publisher, size int, m *metrics, logger *slog.Logger) *predictionLog {
	return &predictionLog{pub: pub, queue: make(chan *serving.PredictionRecord, max(size, 1)), metrics: m, logger: logger}
}

// Offer queues rec unless the queue is full.
func (q *predictionLog) Offer(rec *serving.PredictionRecord) bool {
	select {
	case q.queue <- rec:
		return true
	default:
		q.metrics.predictionLogs.WithLabelValues("dropped").Inc()
		return false
	}
}

// run publishes queued predictions until ctx ends, then what is left in the
// queue, within drain.
func (q *predictionLog) run(ctx context.Context, drain time.Duration) {
	for {
		select {
		case rec := <-q.queue:
			// Let the predictions of the next requests join this round's
			// events, unless plenty are queued already.
			if len(q.queue) < lingerQueued {
				select {
				case <-time.After(mergeWindow):
				case <-ctx.Done():
				}
			}
			q.publish(context.WithoutCancel(ctx), q.take(rec))
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
			defer cancel()
			for {
				select {
				case rec := <-q.queue:
					q.publish(dctx, q.take(rec))
				default:
					return
				}
			}
		}
	}
}

// logEvent is the records of one prediction.logged event: one model
// version, deployment, variant and feature set, up to maxMergedRows rows
// in request order.
type logEvent struct {
	recs []*serving.PredictionRecord
	rows int
}

// take returns first and whatever else is queued, up to roundRows rows,
// grouped into events: an event per request would cost the publisher and
// the server more than serving the request did.
func (q *predictionLog) take(first *serving.PredictionRecord) []*logEvent {
	evs := []*logEvent{{recs: []*serving.PredictionRecord{first}, rows: first.Rows()}}
	rows := first.Rows()
	for rows < roundRows {
		var rec *serving.PredictionRecord
		select {
		case rec = <-q.queue:
		default:
			return evs
		}
		rows += rec.Rows()
		merged := false
		for _, into := range evs {
			if into.rows+rec.Rows() <= maxMergedRows && mergeable(into.recs[0], rec) {
				into.recs = append(into.recs, rec)
				into.rows += rec.Rows()
				merged = true
				break
			}
		}
		if !merged {
			evs = append(evs, &logEvent{recs: []*serving.PredictionRecord{rec}, rows: rec.Rows()})
		}
	}
	return evs
}

// mergeWindow is how long the predictions of a request wait for the next
// requests' to join their event: a few milliseconds more before a
// prediction is logged, much less publishing.
const mergeWindow = 5 * time.Millisecond

// maxMergedRows bounds the rows of a merged prediction.logged, so that it
// stays under the server's message size.
const maxMergedRows = 500

// mergeable reports whether b's rows can join a's event: same pipeline,
// model version, deployment, variant, sample rate, features and classes.
func mergeable(a, b *serving.PredictionRecord) bool {
	return a.Pipeline == b.Pipeline && a.ModelVersion == b.ModelVersion &&
		a.DeploymentID == b.DeploymentID && a.Variant == b.Variant &&
		a.SampleRate == b.SampleRate && slices.Equal(a.Features, b.Features) &&
		slices.Equal(a.Classes, b.Classes)
}

// publish sends the events of one round; the metrics count requests.
func (q *predictionLog) publish(ctx context.Context, logEvs []*logEvent) {
	evs := make([]event.Event, 0, len(logEvs))
	requests := 0
	for _, le := range logEvs {
		head := le.recs[0]
		ev, err := events.NewJSON(q.pub.Source(), head.Pipeline, events.PredictionLogged, appendPredictionLogged(nil, le.recs))
		if err != nil {
			q.metrics.predictionLogs.WithLabelValues("failed").Add(float64(len(le.recs)))
			q.logger.Error("prediction.logged not built", "pipeline", head.Pipeline, "error", err)
			continue
		}
		// The first prediction id names the event: a retried publish of
		// the same predictions is stored once. A shadow's predictions
		// share the ids of the answers they mirror, so their events are
		// named apart.
		if head.Rows() > 0 {
			parts := []string{events.PredictionLogged, head.Pipeline, head.IDs[0]}
			if head.Variant == serving.Shadow {
				parts = append(parts, string(head.Variant))
			}
			ev.SetID(bus.StableID(parts...))
		}
		ev.SetExtension(bus.ExtModelVersion, fmt.Sprint(head.ModelVersion))
		evs = append(evs, ev)
		requests += len(le.recs)
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
