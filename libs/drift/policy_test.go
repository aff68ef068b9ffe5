package drift

import (
	"errors"
	"math"
	"reflect"
	"slices"
	"testing"
)

func TestPolicyNormalize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   Policy
		want Policy
		err  error
	}{
		{"psi default", Policy{Method: "psi"}, Policy{Method: PSI, Threshold: 0.2, PValueThreshold: 0.05, DistanceThreshold: 0.1}, nil},
		{"ks default", Policy{Method: "KS"}, Policy{Method: KS, Threshold: 0.1, PValueThreshold: 0.05, DistanceThreshold: 0.1}, nil},
		{"chisquare default", Policy{Method: "chisquare", MinRows: 500}, Policy{Method: ChiSquare, Threshold: 0.05, PValueThreshold: 0.05, DistanceThreshold: 0.1, MinRows: 500}, nil},
		{"z default", Policy{Method: "z"}, Policy{Method: ZTest, Threshold: 0.05, PValueThreshold: 0.05, DistanceThreshold: 0.1}, nil},
		{"auto default", Policy{Method: "auto"}, Policy{Method: Auto, PValueThreshold: 0.05, DistanceThreshold: 0.1}, nil},
		{"auto thresholds", Policy{Method: Auto, PValueThreshold: 0.01, DistanceThreshold: 0.2}, Policy{Method: Auto, PValueThreshold: 0.01, DistanceThreshold: 0.2}, nil},
		{"spec example", Policy{Method: "psi", Threshold: 0.2, ShareOfFeatures: 0.3, MinRows: 500}, Policy{Method: PSI, Threshold: 0.2, PValueThreshold: 0.05, DistanceThreshold: 0.1, ShareOfFeatures: 0.3, MinRows: 500}, nil},
		{"feature overrides", Policy{Method: "auto", Features: map[string]FeaturePolicy{"a": {Method: "PSI"}, "b": {Method: "chisquare", Threshold: 0.01}, "c": {}}},
			Policy{Method: Auto, PValueThreshold: 0.05, DistanceThreshold: 0.1, Features: map[string]FeaturePolicy{"a": {Method: PSI, Threshold: 0.2}, "b": {Method: ChiSquare, Threshold: 0.01}, "c": {}}}, nil},
		{"feature keeps the policy's threshold", Policy{Method: PSI, Threshold: 0.3, Features: map[string]FeaturePolicy{"a": {}, "b": {Method: PSI}, "c": {Method: KS}}},
			Policy{Method: PSI, Threshold: 0.3, PValueThreshold: 0.05, DistanceThreshold: 0.1, Features: map[string]FeaturePolicy{"a": {Threshold: 0.3}, "b": {Method: PSI, Threshold: 0.3}, "c": {Method: KS, Threshold: 0.1}}}, nil},
		{"threshold with auto", Policy{Method: Auto, Threshold: 0.05}, Policy{}, ErrInvalidPolicy},
		{"feature threshold with auto", Policy{Method: PSI, Features: map[string]FeaturePolicy{"a": {Method: Auto, Threshold: 0.1}}}, Policy{}, ErrInvalidPolicy},
		{"feature p-value above 1", Policy{Method: Auto, Features: map[string]FeaturePolicy{"a": {Method: ZTest, Threshold: 1.5}}}, Policy{}, ErrInvalidPolicy},
		{"feature unknown method", Policy{Method: Auto, Features: map[string]FeaturePolicy{"a": {Method: "kl"}}}, Policy{}, ErrUnknownMethod},
		{"p-value threshold above 1", Policy{Method: Auto, PValueThreshold: 1.5}, Policy{}, ErrInvalidPolicy},
		{"negative distance threshold", Policy{Method: Auto, DistanceThreshold: -0.1}, Policy{}, ErrInvalidPolicy},
		{"unknown method", Policy{Method: "kl"}, Policy{}, ErrUnknownMethod},
		{"negative threshold", Policy{Method: PSI, Threshold: -1}, Policy{}, ErrInvalidPolicy},
		{"nan threshold", Policy{Method: PSI, Threshold: math.NaN()}, Policy{}, ErrInvalidPolicy},
		{"p-value above 1", Policy{Method: ChiSquare, Threshold: 2}, Policy{}, ErrInvalidPolicy},
		{"share above 1", Policy{Method: PSI, ShareOfFeatures: 1.5}, Policy{}, ErrInvalidPolicy},
		{"negative rows", Policy{Method: PSI, MinRows: -1}, Policy{}, ErrInvalidPolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.in.Normalize()
			if !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Normalize = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// sixFeatures returns references for features f0..f5 (5,000 rows each) and
// a 1,000-row batch in which the first `shifted` features moved by one
// standard deviation.
func sixFeatures(t testing.TB, shifted int) (map[string]Reference, map[string][]float64) {
	refs := map[string]Reference{}
	batch := map[string][]float64{}
	for i := range 6 {
		name := "f" + string(rune('0'+i))
		r, err := NewReference(normal(uint64(100+i), 5000, 0))
		if err != nil {
			t.Fatal(err)
		}
		refs[name] = r
		mean := 0.0
		if i < shifted {
			mean = 1
		}
		batch[name] = normal(uint64(200+i), 1000, mean)
	}
	return refs, batch
}

func TestEvaluate(t *testing.T) {
	t.Parallel()
	refs, batch := sixFeatures(t, 3)
	for _, m := range numericMethods() {
		t.Run(string(m), func(t *testing.T) {
			t.Parallel()
			tests := []struct {
				name    string
				policy  Policy
				drifted bool
				skipped bool
			}{
				{"share 0.5 reached", Policy{Method: m, ShareOfFeatures: 0.5}, true, false},
				{"share 0.6 not reached", Policy{Method: m, ShareOfFeatures: 0.6}, false, false},
				{"any feature", Policy{Method: m}, true, false},
				{"too few rows", Policy{Method: m, MinRows: 1001}, false, true},
				{"exactly min rows", Policy{Method: m, MinRows: 1000}, true, false},
			}
			for _, tt := range tests {
				r, err := Evaluate(tt.policy, refs, batch)
				if err != nil {
					t.Fatal(err)
				}
				if r.Drifted != tt.drifted || (r.Skipped != "") != tt.skipped {
					t.Errorf("%s: drifted %v skipped %q, want %v, %v", tt.name, r.Drifted, r.Skipped, tt.drifted, tt.skipped)
				}
				if want := []string{"f0", "f1", "f2"}; !reflect.DeepEqual(r.DriftedFeatures(), want) {
					t.Errorf("%s: drifted features %v, want %v (scores %+v)", tt.name, r.DriftedFeatures(), want, r.Features)
				}
				if r.Rows != 1000 || r.ReferenceRows != 5000 || r.Compared != 6 || r.ShareDrifted != 0.5 || r.Method != m || r.Threshold != m.DefaultThreshold() {
					t.Errorf("%s: report %+v", tt.name, r)
				}
				for i, f := range r.Features {
					if f.Feature != "f"+string(rune('0'+i)) || f.Rows != 1000 || f.Threshold != r.Threshold {
						t.Errorf("%s: feature %d = %+v", tt.name, i, f)
					}
				}
			}
		})
	}
}

func TestEvaluateSkipsAndErrors(t *testing.T) {
	t.Parallel()
	refs, batch := sixFeatures(t, 1)
	delete(batch, "f5")
	batch["f4"] = slices.Repeat([]float64{math.NaN()}, 1000)
	batch["unmonitored"] = make([]float64, 1000)
	refs["color"] = mustCatRef(t, []string{"red", "blue"})
	r, err := Evaluate(Policy{Method: KS}, refs, batch)
	if err != nil {
		t.Fatal(err)
	}
	var names, skipped []string
	for _, f := range r.Features {
		names = append(names, f.Feature)
		if f.Skipped != "" {
			skipped = append(skipped, f.Feature)
		}
	}
	// "color" has a categorical reference but the batch gave no column for
	// it; f4 is all missing; f5 is absent.
	if want := []string{"color", "f0", "f1", "f2", "f3", "f4", "f5"}; !reflect.DeepEqual(names, want) {
		t.Errorf("features %v, want %v", names, want)
	}
	if want := []string{"color", "f4", "f5"}; !reflect.DeepEqual(skipped, want) {
		t.Errorf("skipped %v, want %v", skipped, want)
	}
	if r.Compared != 4 || r.ShareDrifted != 0.25 || !r.Drifted {
		t.Errorf("compared %d, share %v, drifted %v", r.Compared, r.ShareDrifted, r.Drifted)
	}

	// Mixed kinds through EvaluateSamples.
	samples := map[string]Sample{
		"f0":    {Values: batch["f0"]},
		"color": {Categories: slices.Repeat([]string{"green"}, 1000)},
	}
	r, err = EvaluateSamples(Policy{Method: ChiSquare}, map[string]Reference{"f0": refs["f0"], "color": refs["color"]}, samples)
	if err != nil {
		t.Fatal(err)
	}
	if r.Compared != 2 || !reflect.DeepEqual(r.DriftedFeatures(), []string{"color", "f0"}) {
		t.Errorf("mixed kinds: %+v", r)
	}

	// Nothing to compare: no verdict, no error.
	r, err = Evaluate(Policy{Method: PSI}, nil, batch)
	if err != nil || r.Drifted || r.Skipped == "" || len(r.Features) != 0 {
		t.Errorf("no references: %+v, %v", r, err)
	}
	r, err = Evaluate(Policy{Method: PSI}, refs, nil)
	if err != nil || r.Drifted || r.Skipped == "" || r.Rows != 0 {
		t.Errorf("empty batch: %+v, %v", r, err)
	}

	// Errors: the policy, and ragged columns.
	if _, err := Evaluate(Policy{Method: "nope"}, refs, batch); !errors.Is(err, ErrUnknownMethod) {
		t.Errorf("unknown method: %v", err)
	}
	batch["f0"] = batch["f0"][:10]
	if _, err := Evaluate(Policy{Method: PSI}, refs, batch); !errors.Is(err, ErrInvalidBatch) {
		t.Errorf("ragged batch: %v", err)
	}
}
