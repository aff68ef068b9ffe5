package bus_test

import (
	"testing"

	"github.com/gyrehq/gyre/libs/bus"
)

func BenchmarkDecodeBinary(b *testing.B) {
	ev := sampleEvent()
	msg, err := bus.EncodeBinary("s", &ev)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bus.Decode(msg.Header, msg.Data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeBinary(b *testing.B) {
	ev := sampleEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bus.EncodeBinary("s", &ev); err != nil {
			b.Fatal(err)
		}
	}
}
