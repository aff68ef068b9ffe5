package deployer

import (
	"context"
	"fmt"
	"log/slog"
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
			q.publish(context.WithoutCancel(ctx), q.take(msg))
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
			defer cancel()
			for {
				select {
				case msg := <-q.queue:
					q.publish(dctx, q.take(msg))
				default:
					return
				}
			}
		}
	}
}

// take returns msg and whatever else is queued, up to publishBatch.
func (q *predictionLog) take(first *gyrev1.PredictionLogged) []*gyrev1.PredictionLogged {
	msgs := []*gyrev1.PredictionLogged{first}
	for len(msgs) < publishBatch {
		select {
		case m := <-q.queue:
			msgs = append(msgs, m)
		default:
			return msgs
		}
	}
	return msgs
}

func (q *predictionLog) publish(ctx context.Context, msgs []*gyrev1.PredictionLogged) {
	evs := make([]event.Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := events.New(q.pub.Source(), m.GetPipeline(), m)
		if err != nil {
			q.metrics.predictionLogs.WithLabelValues("failed").Inc()
			q.logger.Error("prediction.logged not built", "pipeline", m.GetPipeline(), "error", err)
			continue
		}
		// The first prediction id names the event: a retried publish of
		// the same predictions is stored once.
		if len(m.GetRows()) > 0 {
			ev.SetID(bus.StableID(events.PredictionLogged, m.GetPipeline(), m.GetRows()[0].GetPredictionId()))
		}
		ev.SetExtension(bus.ExtModelVersion, fmt.Sprint(m.GetModelVersion()))
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		return
	}
	if err := q.pub.PublishBatch(ctx, evs); err != nil {
		// PublishBatch names the events that failed; the rest are stored.
		q.metrics.predictionLogs.WithLabelValues("failed").Inc()
		q.logger.Warn("prediction.logged publish failed; those predictions are not logged", "events", len(evs), "error", err)
		return
	}
	q.metrics.predictionLogs.WithLabelValues("published").Add(float64(len(evs)))
}
