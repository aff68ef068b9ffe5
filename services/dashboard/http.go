package dashboard

import (
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/service"
)

//go:embed web/index.html
var web embed.FS

// Outcomes of gyre_dashboard_events_total.
const (
	outcomeFolded     = "folded"
	outcomeUnreadable = "unreadable"
	outcomeSkipped    = "skipped"
)

type metrics struct {
	events *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, board *Board) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gyre_dashboard_events_total",
			Help: "Lifecycle events the dashboard read, by outcome: folded into the board, unreadable (shown, payload not decoded) or skipped (not a CloudEvent).",
		}, []string{"outcome"}),
	}
	feeds := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gyre_dashboard_live_feeds",
		Help: "Browsers following the live feed (api/stream) now.",
	}, func() float64 { return float64(board.Subscribers()) })
	for _, c := range []prometheus.Collector{m.events, feeds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register dashboard metrics: %w", err)
		}
	}
	for _, o := range []string{outcomeFolded, outcomeUnreadable, outcomeSkipped} {
		m.events.WithLabelValues(o)
	}
	return m, nil
}

// api serves the page and what it reads. Every URL the page uses is
// relative, so the dashboard works under a prefix too (`gyre up` serves it
// at /services/dashboard/).
type api struct {
	board     *Board
	caughtUp  func() bool
	keepalive time.Duration
	// initial is how many of the latest entries a new browser gets.
	initial int
}

func (a *api) routes(handle func(pattern string, h http.Handler) error) error {
	for pattern, h := range map[string]http.HandlerFunc{
		"GET /{$}":           a.page,
		"GET /api/pipelines": a.pipelines,
		"GET /api/events":    a.events,
		"GET /api/stream":    a.stream,
	} {
		if err := handle(pattern, h); err != nil {
			return err
		}
	}
	return nil
}

func (a *api) page(w http.ResponseWriter, _ *http.Request) {
	b, err := web.ReadFile("web/index.html")
	if err != nil {
		service.WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	// The page loads nothing from elsewhere and runs only its own script.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:")
	_, _ = w.Write(b)
}

// snapshot is the board's state as a whole, as the API sends it.
type snapshot struct {
	// Reset tells a browser to forget the entries it shows: what follows
	// replaces them.
	Reset bool `json:"reset,omitempty"`
	// CaughtUp is false while the dashboard is still reading the history
	// the stream held when it started.
	CaughtUp bool `json:"caughtUp"`
	Snapshot
}

func (a *api) pipelines(w http.ResponseWriter, _ *http.Request) {
	service.WriteJSON(w, http.StatusOK, snapshot{CaughtUp: a.caughtUp(), Snapshot: a.board.Snapshot()})
}

func (a *api) events(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r)
	if err != nil {
		service.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	entries, last := a.board.Entries(q)
	if entries == nil {
		entries = []Entry{}
	}
	service.WriteJSON(w, http.StatusOK, map[string]any{"lastSeq": last, "entries": entries})
}

// parseQuery reads the feed filters of /api/events, naming the parameter
// that is wrong.
func parseQuery(r *http.Request) (Query, error) {
	v := r.URL.Query()
	q := Query{Pipeline: v.Get("pipeline"), CorrelationID: v.Get("correlation"), Limit: 200}
	if q.Pipeline != "" {
		if err := events.ValidatePipeline(q.Pipeline); err != nil {
			return q, fmt.Errorf("pipeline: %w", err)
		}
	}
	if t := v.Get("type"); t != "" {
		spec, err := events.ResolveType(t)
		if err != nil {
			return q, fmt.Errorf("type: %w", err)
		}
		q.Type = spec.Name
	}
	if s := v.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return q, fmt.Errorf("after: %q is not a stream sequence (a whole number >= 0)", s)
		}
		q.After = n
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, fmt.Errorf("limit: %q is not a whole number >= 0 (0: every entry kept)", s)
		}
		q.Limit = n
	}
	return q, nil
}

// stream is the live feed, as server-sent events:
//
//	event: snapshot  every pipeline's state (first, and after a gap)
//	event: entry     an entry the browser missed (id: its sequence)
//	event: update    a new entry and its pipeline's state (id: its sequence)
//
// A browser that reconnects sends the last id it saw (Last-Event-ID) and
// gets what it missed, or a snapshot with reset set when the board no
// longer keeps all of it.
func (a *api) stream(w http.ResponseWriter, r *http.Request) {
	after, err := resumeFrom(r)
	if err != nil {
		service.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	sub := a.board.Subscribe(after, a.initial, 256)
	defer a.board.Unsubscribe(sub)

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)

	if _, err := io.WriteString(w, "retry: 2000\n\n"); err != nil {
		return
	}
	if err := writeEvent(w, "snapshot", 0, snapshot{Reset: sub.Reset, CaughtUp: a.caughtUp(), Snapshot: sub.Snapshot}); err != nil {
		return
	}
	for _, e := range sub.Missed {
		if err := writeEvent(w, "entry", e.Seq, e); err != nil {
			return
		}
	}
	if rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(a.keepalive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case u, ok := <-sub.C():
			if !ok {
				return // fell behind, or the service stops: the browser reconnects
			}
			if err := writeEvent(w, "update", u.Entry.Seq, u); err != nil {
				return
			}
		case <-tick.C:
			if _, err := io.WriteString(w, ": keepalive\n\n"); err != nil {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}

// resumeFrom is the sequence a live feed resumes after: the Last-Event-ID a
// reconnecting browser sends, else ?after=, else 0 (a new browser).
func resumeFrom(r *http.Request) (uint64, error) {
	name, s := "Last-Event-ID", r.Header.Get("Last-Event-ID")
	if s == "" {
		name, s = "after", r.URL.Query().Get("after")
	}
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a stream sequence (a whole number >= 0)", name, s)
	}
	return n, nil
}

func writeEvent(w io.Writer, name string, id uint64, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if id > 0 {
		_, err = fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", id, name, data)
	} else {
		_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data)
	}
	return err
}
