package events

import (
	"slices"
	"testing"
)

func TestEveryEventHasKnownEmitters(t *testing.T) {
	t.Parallel()
	known := append(ServiceNames(), IdentityAdmin, IdentityProducer)
	for _, s := range Catalog() {
		if len(s.Emitters) == 0 {
			t.Errorf("%s: no emitter", s.Name)
		}
		for _, e := range s.Emitters {
			if !slices.Contains(known, e) {
				t.Errorf("%s: emitter %q is no identity", s.Name, e)
			}
		}
		// What outsiders publish is exactly the public contract.
		if s.Public != slices.Contains(s.Emitters, IdentityProducer) {
			t.Errorf("%s: public %v, producers may emit it: %v", s.Name, s.Public, slices.Contains(s.Emitters, IdentityProducer))
		}
	}
}

func TestEveryBucketHasItsWritersDeclared(t *testing.T) {
	t.Parallel()
	var buckets []string
	for _, kv := range KeyValues() {
		buckets = append(buckets, kv.Bucket)
	}
	for _, o := range ObjectStores() {
		buckets = append(buckets, o.Bucket)
	}
	for _, b := range buckets {
		if _, ok := bucketWriters[b]; !ok {
			t.Errorf("bucket %s: who writes it is not declared (bucketWriters)", b)
		}
	}
	if len(bucketWriters) != len(buckets) {
		t.Errorf("bucketWriters has %d buckets, the topology %d", len(bucketWriters), len(buckets))
	}
}

func TestAccessOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		identity string
		emits    []string
		kv, obj  []string
		jobs     bool
	}{
		{ServiceIngest, []string{DataBatchReceived}, []string{BucketState}, []string{ObjectBatches}, false},
		{ServiceRegistry, []string{ModelRegistered, ModelPromoted}, []string{BucketRegistry}, []string{ObjectModels}, false},
		{ServiceTrainer, []string{TrainingRequested, TrainingStarted, TrainingCompleted, TrainingFailed},
			[]string{BucketLeases, BucketState, BucketWorkers}, []string{ObjectModels}, true},
		{ServiceDashboard, nil, nil, nil, false},
		{IdentityReader, nil, nil, nil, false},
		{IdentityProducer, []string{DataBatchArrived, LabelReceived}, nil, nil, false},
	}
	for _, tt := range tests {
		a, err := AccessOf(tt.identity)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(a.Emits, tt.emits) || !slices.Equal(a.KeyValues, tt.kv) || !slices.Equal(a.Objects, tt.obj) || a.Jobs != tt.jobs {
			t.Errorf("%s: %+v", tt.identity, a)
		}
	}
	if _, err := AccessOf("nobody"); err == nil {
		t.Error("an unknown identity has access")
	}
}
