package looptest

import (
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/store"
)

// Promotion is a version a test makes champion, as the registry would.
type Promotion struct {
	Pipeline string
	Version  int64
	// Artifact and Reference are the version's objects in gyre-models.
	Artifact  *gyrev1.ObjectRef
	Reference *gyrev1.ObjectRef
	Metrics   map[string]float64
	Lineage   *gyrev1.Lineage
	// Reason defaults to blessed.
	Reason string
}

// Promote plays the registry for services that follow it: it records
// p.Version (unless the record has it) in the pipeline's gyre-registry
// record, moves champion to it with the registry's own rules
// (models.Registry.PromoteTo: a new generation, previous chosen again),
// and publishes the move's model.promoted with the generation, as the
// registry does. It returns the event and the generation.
func (e *Env) Promote(p Promotion) (event.Event, int64) {
	e.t.Helper()
	if p.Reason == "" {
		p.Reason = models.ReasonBlessed
	}
	var mv models.Move
	rec, err := store.UpdateJSON(e.Ctx(), e.Buckets.Registry, p.Pipeline, func(rec *models.Registry, _ bool) error {
		rec.Pipeline = p.Pipeline
		if _, ok := rec.Version(p.Version); !ok {
			v := models.Version{
				Version: p.Version, RequestID: "request-" + strconv.FormatInt(p.Version, 10), Verdict: models.VerdictBlessed,
				Metrics: p.Metrics, Lineage: models.LineageFromProto(p.Lineage), CreatedAt: time.Now().UTC(),
			}
			if p.Artifact != nil {
				v.Artifact = models.ObjectFromProto(p.Artifact)
			}
			if p.Reference != nil {
				ref := models.ObjectFromProto(p.Reference)
				v.Reference = &ref
			}
			sig, err := Signer().Sign(v.Subject(p.Pipeline))
			if err == nil {
				// As the registry signs; a version without an artifact digest
				// stays unsigned, and deployers refuse it.
				v.Signature = sig
			}
			rec.Versions = append(rec.Versions, v)
			// Versions stay sorted: tests may register them out of order.
			for i := len(rec.Versions) - 1; i > 0 && rec.Versions[i].Version < rec.Versions[i-1].Version; i-- {
				rec.Versions[i], rec.Versions[i-1] = rec.Versions[i-1], rec.Versions[i]
			}
		}
		m := rec.PromoteTo(p.Version, p.Reason, time.Now().UTC())
		m.EventID = bus.StableID(events.ModelPromoted, p.Pipeline, strconv.FormatInt(m.Seq, 10))
		mv = *m
		return nil
	})
	if err != nil {
		e.t.Fatalf("looptest: promote %s v%d: %v", p.Pipeline, p.Version, err)
	}
	v, _ := rec.Version(p.Version)
	msg := &gyrev1.ModelPromoted{
		Pipeline: p.Pipeline, ModelVersion: p.Version, Alias: models.AliasChampion, PreviousVersion: mv.Previous,
		Reason: mv.Reason, Artifact: v.Artifact.Proto(), Metrics: v.Metrics, Lineage: v.Lineage.Proto(),
		Generation: mv.Seq,
	}
	if v.Reference != nil {
		msg.Reference = v.Reference.Proto()
	}
	ev, err := events.New("/gyre/registry", p.Pipeline, msg)
	if err != nil {
		e.t.Fatalf("looptest: new event: %v", err)
	}
	ev.SetID(mv.EventID)
	ev.SetExtension(bus.ExtModelVersion, strconv.FormatInt(p.Version, 10))
	if err := e.Pub.Publish(e.Ctx(), ev); err != nil {
		e.t.Fatalf("looptest: publish: %v", err)
	}
	return ev, mv.Seq
}
