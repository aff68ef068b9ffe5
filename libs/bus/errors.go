package bus

import (
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/gyrehq/gyre/events"
)

// PermanentError marks an error that retrying cannot fix: bad input, an
// unknown pipeline, a payload that does not decode. The bus sends the message
// that caused it straight to the dead-letter stream.
//
// Any error in a chain that has a method Permanent() bool returning true is
// treated the same way, so packages that must not import the bus (domain
// code, the events catalog) can declare their own permanent errors.
type PermanentError struct {
	Err error
}

// Permanent wraps err as a permanent error; Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// Permanentf formats a permanent error; %w wraps as in fmt.Errorf.
func Permanentf(format string, args ...any) error {
	return &PermanentError{Err: fmt.Errorf(format, args...)}
}

func (e *PermanentError) Error() string   { return e.Err.Error() }
func (e *PermanentError) Unwrap() error   { return e.Err }
func (e *PermanentError) Permanent() bool { return true }

// IsPermanent reports whether err is permanent: it, or an error it wraps, says
// so through Permanent() bool, or it is a recovered handler panic. Every other
// error is transient: retried with backoff, then redelivered, and dead-lettered
// only when the consumer's deliveries run out.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var p interface{ Permanent() bool }
	if errors.As(err, &p) && p.Permanent() {
		return true
	}
	var panicErr middleware.RecoveredPanicError
	return errors.As(err, &panicErr)
}

// MalformedError says a NATS message is not a valid CloudEvent. It is permanent.
type MalformedError struct {
	Reason string
}

func (e *MalformedError) Error() string   { return "malformed CloudEvent: " + e.Reason }
func (e *MalformedError) Permanent() bool { return true }

func malformed(format string, args ...any) error {
	return &MalformedError{Reason: fmt.Sprintf(format, args...)}
}

// errorKind names the class of an error for metrics and dead-letter headers:
// malformed (not a CloudEvent), contract (a payload that breaks its
// contract, events.ContractError), panic, retries-exhausted, permanent,
// transient.
func errorKind(err error) string {
	var m *MalformedError
	var contract *events.ContractError
	var panicErr middleware.RecoveredPanicError
	var exhausted *exhaustedError
	switch {
	case errors.As(err, &m):
		return "malformed"
	case errors.As(err, &contract):
		return "contract"
	case errors.As(err, &panicErr):
		return "panic"
	case errors.As(err, &exhausted):
		return "retries-exhausted"
	case IsPermanent(err):
		return "permanent"
	default:
		return "transient"
	}
}

// exhaustedError wraps a transient error that kept failing until the
// consumer's last delivery.
type exhaustedError struct {
	deliveries uint64
	err        error
}

func (e *exhaustedError) Error() string {
	return fmt.Sprintf("transient error persisted through %d deliveries: %v", e.deliveries, e.err)
}
func (e *exhaustedError) Unwrap() error   { return e.err }
func (e *exhaustedError) Permanent() bool { return true }
