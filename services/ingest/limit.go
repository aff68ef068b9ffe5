package ingest

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// BusyError is an upload refused because ingest already takes as many
// uploads, or holds as many bytes of them, as it is allowed: 429 with
// Retry-After. It is transient.
type BusyError struct {
	Reason string
}

func (e *BusyError) Error() string { return "ingest is busy: " + e.Reason + "; retry later" }

// uploadLimiter bounds the uploads in progress: their number, and the bytes
// they may hold in temporary files at once (each reserves its declared
// length, or the size limit when it declares none). It refuses rather than
// queues: a client told 429 retries, a queued one holds a connection.
type uploadLimiter struct {
	maxUploads int
	maxBytes   int64

	mu      sync.Mutex
	uploads int
	bytes   int64

	inFlight prometheus.Gauge
	reserved prometheus.Gauge
	refused  *prometheus.CounterVec
}

func newUploadLimiter(maxUploads int, maxBytes int64, reg prometheus.Registerer) (*uploadLimiter, error) {
	l := &uploadLimiter{
		maxUploads: maxUploads,
		maxBytes:   maxBytes,
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gyre_ingest_uploads_in_progress", Help: "HTTP batch uploads being received or ingested.",
		}),
		reserved: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gyre_ingest_upload_reserved_bytes", Help: "Bytes of temporary file space reserved by the uploads in progress.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gyre_ingest_uploads_refused_total", Help: "HTTP batch uploads refused before ingesting, by reason: busy (429), too_large (413), slow_body (408).",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{l.inFlight, l.reserved, l.refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ingest metrics: %w", err)
		}
	}
	for _, r := range []string{"busy", "too_large", "slow_body"} {
		l.refused.WithLabelValues(r)
	}
	return l, nil
}

// acquire reserves an upload of size bytes; release gives it back.
func (l *uploadLimiter) acquire(size int64) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.uploads >= l.maxUploads:
		return nil, &BusyError{Reason: fmt.Sprintf("%d uploads in progress, the most it takes at once (--max-concurrent-uploads)", l.uploads)}
	case l.bytes+size > l.maxBytes:
		return nil, &BusyError{Reason: fmt.Sprintf("the uploads in progress hold %d of the %d bytes allowed (--max-upload-buffer-bytes), and this one needs %d",
			l.bytes, l.maxBytes, size)}
	}
	l.uploads++
	l.bytes += size
	l.inFlight.Set(float64(l.uploads))
	l.reserved.Set(float64(l.bytes))
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.uploads--
			l.bytes -= size
			l.inFlight.Set(float64(l.uploads))
			l.reserved.Set(float64(l.bytes))
		})
	}, nil
}
