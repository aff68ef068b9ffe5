package drift

import (
	"errors"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events/gyrev1"
)

func TestNumericStatsProtoRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		stats NumericStats
	}{
		{"normal", Summarize(normal(11, 500, 3))},
		{"one value", Summarize([]float64{2})},
		{"empty", Summarize(nil)},
		{"missing only", Summarize([]float64{nan()})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := tt.stats.ToProto("nswprice", "")
			if p.Name != "nswprice" || p.Type != "float" || p.Count != tt.stats.Count {
				t.Errorf("proto %v", p)
			}
			if tt.stats.Count > 1 && !near(p.Std, tt.stats.PopulationStd(), 0) {
				t.Errorf("proto std %v, want the population std %v", p.Std, tt.stats.PopulationStd())
			}
			// Through the wire, as the validation service publishes it.
			b, err := protojson.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			var wire gyrev1.ColumnStats
			if err := protojson.Unmarshal(b, &wire); err != nil {
				t.Fatal(err)
			}
			back, err := NumericStatsFromProto(&wire)
			if err != nil {
				t.Fatal(err)
			}
			if !near(back.Std, tt.stats.Std, 1e-12) {
				t.Errorf("std %v, want %v", back.Std, tt.stats.Std)
			}
			back.Std = tt.stats.Std
			if !reflect.DeepEqual(back, tt.stats) {
				t.Errorf("round trip =\n%+v\nwant\n%+v", back, tt.stats)
			}
		})
	}
	if _, err := NumericStatsFromProto(&gyrev1.ColumnStats{Histogram: &gyrev1.Histogram{Edges: []float64{1, 2}}}); !errors.Is(err, ErrInvalidProto) {
		t.Errorf("histogram without counts: %v", err)
	}
	if _, err := NumericStatsFromProto(nil); !errors.Is(err, ErrInvalidProto) {
		t.Errorf("nil: %v", err)
	}
}

func TestCategoricalStatsProtoRoundTrip(t *testing.T) {
	t.Parallel()
	s := SummarizeCategories([]string{"mon", "tue", "tue", "", "wed"})
	p := s.ToProto("day", "")
	if p.Type != "string" || p.Distinct != 3 || len(p.TopCategories) != 3 || p.TopCategories[0].Value != "tue" {
		t.Errorf("proto %v", p)
	}
	back, err := CategoricalStatsFromProto(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s) {
		t.Errorf("round trip %+v, want %+v", back, s)
	}
	// More categories than the payload's 20: the rest become Other.
	var many []string
	for i := range 30 {
		many = append(many, string(rune('A'+i)))
	}
	back, err = CategoricalStatsFromProto(SummarizeCategories(many).ToProto("c", "string"))
	if err != nil || len(back.Counts) != DefaultTopK || back.Other != 10 || back.Distinct != 30 {
		t.Errorf("30 categories: %+v, %v", back, err)
	}
	if _, err := CategoricalStatsFromProto(&gyrev1.ColumnStats{Count: 1, TopCategories: []*gyrev1.CategoryCount{{Value: "a", Count: 2}}}); !errors.Is(err, ErrInvalidProto) {
		t.Errorf("top categories above count: %v", err)
	}
}

func TestReportProtoRoundTrip(t *testing.T) {
	t.Parallel()
	refs, batch := sixFeatures(t, 2)
	r, err := Evaluate(Policy{Method: KS, ShareOfFeatures: 0.3, MinRows: 500}, refs, batch)
	if err != nil {
		t.Fatal(err)
	}
	m := r.ToProto()
	if m.Method != "ks" || len(m.Features) != 6 || m.Rows != 1000 || m.MinRows != 500 || m.ReferenceRows != 5000 || !m.Drifted || m.ShareThreshold != 0.3 {
		t.Errorf("drift.measured %v", m)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var wire gyrev1.DriftMeasured
	if err := proto.Unmarshal(b, &wire); err != nil {
		t.Fatal(err)
	}
	back, err := ReportFromProto(&wire)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, r) {
		t.Errorf("round trip\n%+v\nwant\n%+v", back, r)
	}
	for i, f := range r.Features {
		if got := FeatureScoreFromProto(f.ToProto()); got != f {
			t.Errorf("feature %d: %+v, want %+v", i, got, f)
		}
	}
	d := r.ToDetectedProto()
	if !reflect.DeepEqual(d.DriftedFeatures, []string{"f0", "f1"}) || len(d.Features) != 6 || d.ShareDrifted != r.ShareDrifted {
		t.Errorf("drift.detected %v", d)
	}

	// Skipped features are listed apart, with the reason: features has one
	// entry per feature compared.
	delete(batch, "f5")
	r, err = Evaluate(Policy{Method: PSI}, refs, batch)
	if err != nil {
		t.Fatal(err)
	}
	m = r.ToProto()
	if len(m.Features) != 5 || len(m.SkippedFeatures) != 1 || m.SkippedFeatures[0].GetFeature() != "f5" ||
		m.SkippedFeatures[0].GetReason() != "not in the batch" || m.SkippedFeatures[0].GetMethod() != "psi" {
		t.Errorf("payload: %d features, skipped %v; want the 5 compared and f5", len(m.Features), m.SkippedFeatures)
	}
	if back, err := ReportFromProto(m); err != nil || !reflect.DeepEqual(back, r) {
		t.Errorf("round trip with a skipped feature\n%+v\nwant\n%+v", back, r)
	}
	if d := r.ToDetectedProto(); len(d.SkippedFeatures) != 1 {
		t.Errorf("drift.detected skipped %v", d.SkippedFeatures)
	}
	if _, err := ReportFromProto(&gyrev1.DriftMeasured{Method: "kl"}); !errors.Is(err, ErrUnknownMethod) {
		t.Errorf("unknown method: %v", err)
	}
}
