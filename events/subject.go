package events

import (
	"errors"
	"fmt"
	"strings"
)

// Subject prefixes. Lifecycle events live under gyre.ev (what dashboards
// subscribe to), sampled predictions under gyre.pred (their own stream, short
// retention), training jobs under gyre.jobs and dead letters under gyre.dlq.
const (
	EventsPrefix      = "gyre.ev"
	PredictionsPrefix = "gyre.pred"
	JobsPrefix        = "gyre.jobs"
	DLQPrefix         = "gyre.dlq"

	// AllEvents matches every lifecycle event of every pipeline.
	AllEvents = EventsPrefix + ".>"
)

// MaxNameLen is the longest pipeline, pool or service name.
const MaxNameLen = 63

// ErrInvalidName is wrapped by every name validation error.
var ErrInvalidName = errors.New("invalid name")

// ValidatePipeline reports whether name can be a pipeline name: 1 to 63
// characters of [a-z0-9-]. Pipeline names become one NATS subject token, so
// dots, wildcards and spaces are refused.
func ValidatePipeline(name string) error { return validateToken("pipeline", name) }

// ValidatePool reports whether name can be a worker pool name (same rules as
// a pipeline name).
func ValidatePool(name string) error { return validateToken("pool", name) }

// ValidateService reports whether name can be a service name (same rules as a
// pipeline name).
func ValidateService(name string) error { return validateToken("service", name) }

func validateToken(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s name is empty", ErrInvalidName, kind)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %s name %q is %d characters long, at most %d allowed", ErrInvalidName, kind, name, len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' {
			continue
		}
		return fmt.Errorf("%w: %s name %q has %q at position %d; only a-z, 0-9 and '-' are allowed", ErrInvalidName, kind, name, rune(c), i+1)
	}
	return nil
}

// prefixFor returns the subject prefix of an event: predictions have their
// own, everything else is a lifecycle event.
func prefixFor(s Spec) string {
	if s.Stream == StreamPredictions {
		return PredictionsPrefix
	}
	return EventsPrefix
}

// Subject returns the NATS subject of an event of the given name for a
// pipeline: gyre.ev.<pipeline>.<noun>.<verb> (gyre.pred.… for predictions).
func Subject(pipeline, name string) (string, error) {
	if err := ValidatePipeline(pipeline); err != nil {
		return "", err
	}
	s, ok := Lookup(name)
	if !ok {
		return "", fmt.Errorf("unknown event name %q", name)
	}
	return prefixFor(s) + "." + pipeline + "." + s.Name, nil
}

// FilterSubject returns a subject filter for events of one name across all
// pipelines (pipeline == "") or of one pipeline; name == "" matches every
// event of the pipeline(s) in the lifecycle stream.
func FilterSubject(pipeline, name string) (string, error) {
	tok := "*"
	if pipeline != "" {
		if err := ValidatePipeline(pipeline); err != nil {
			return "", err
		}
		tok = pipeline
	}
	if name == "" {
		return EventsPrefix + "." + tok + ".>", nil
	}
	s, ok := Lookup(name)
	if !ok {
		return "", fmt.Errorf("unknown event name %q", name)
	}
	return prefixFor(s) + "." + tok + "." + s.Name, nil
}

// ParseSubject splits a concrete event subject into its pipeline and the
// catalog entry of its event. Wildcards, unknown prefixes and unknown event
// names are errors.
func ParseSubject(subject string) (pipeline string, spec Spec, err error) {
	var rest string
	var prefix string
	switch {
	case strings.HasPrefix(subject, EventsPrefix+"."):
		prefix, rest = EventsPrefix, subject[len(EventsPrefix)+1:]
	case strings.HasPrefix(subject, PredictionsPrefix+"."):
		prefix, rest = PredictionsPrefix, subject[len(PredictionsPrefix)+1:]
	default:
		return "", Spec{}, fmt.Errorf("subject %q is not an event subject (want %s.<pipeline>.<noun>.<verb>)", subject, EventsPrefix)
	}
	pipeline, name, ok := strings.Cut(rest, ".")
	if !ok || name == "" {
		return "", Spec{}, fmt.Errorf("subject %q has no event name after the pipeline", subject)
	}
	if err := ValidatePipeline(pipeline); err != nil {
		return "", Spec{}, fmt.Errorf("subject %q: %w", subject, err)
	}
	s, ok := Lookup(name)
	if !ok {
		return "", Spec{}, fmt.Errorf("subject %q: unknown event %q", subject, name)
	}
	if prefixFor(s) != prefix {
		return "", Spec{}, fmt.Errorf("subject %q: event %q belongs under %s", subject, name, prefixFor(s))
	}
	return pipeline, s, nil
}

// JobSubject returns the work-queue subject of a training pool: gyre.jobs.train.<pool>.
func JobSubject(pool string) (string, error) {
	if err := ValidatePool(pool); err != nil {
		return "", err
	}
	return JobsPrefix + ".train." + pool, nil
}

// DLQSubject returns the dead-letter subject of a service: gyre.dlq.<service>.
func DLQSubject(service string) (string, error) {
	if err := ValidateService(service); err != nil {
		return "", err
	}
	return DLQPrefix + "." + service, nil
}
