package service

import (
	"context"
	"fmt"
	"io"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// SetupTracing installs the global OpenTelemetry tracer provider and the W3C
// TraceContext propagator, and returns the function that flushes and shuts
// the provider down. With exporter none spans are still recorded, so the bus
// stamps a real traceparent on every event and a cascade keeps one trace id;
// they are just not exported. With stdout each finished span is written to w
// as JSON.
func SetupTracing(exporter, serviceName string, w io.Writer) (func(context.Context) error, error) {
	res := resource.NewSchemaless(attribute.String("service.name", "gyre-"+serviceName))
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	switch exporter {
	case TraceNone, "":
	case TraceStdout:
		exp, err := stdouttrace.New(stdouttrace.WithWriter(w))
		if err != nil {
			return nil, fmt.Errorf("stdout trace exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	default:
		return nil, fmt.Errorf("trace exporter %q: want %s or %s", exporter, TraceNone, TraceStdout)
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	return tp.Shutdown, nil
}
