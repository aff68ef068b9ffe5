package ml

import (
	"fmt"
	"strings"
)

// DataError reports a problem with input data, naming where it was found so
// that a person can fix the batch. Row is the 1-based data row (the header is
// not counted), or 0 when the problem is not tied to one row; Column is the
// column name, or "" when the problem is not tied to one column.
type DataError struct {
	Row    int
	Column string
	Msg    string
}

// Error formats the message as "row R, column "C": msg", leaving out the
// parts that are not known.
func (e *DataError) Error() string {
	var b strings.Builder
	b.WriteString("ml: ")
	if e.Row > 0 {
		fmt.Fprintf(&b, "row %d", e.Row)
	}
	if e.Column != "" {
		if e.Row > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "column %q", e.Column)
	}
	if e.Row > 0 || e.Column != "" {
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Permanent reports true: retrying cannot fix bad data. The bus uses this to
// dead-letter the message instead of redelivering it.
func (e *DataError) Permanent() bool { return true }

// ParamError reports an invalid training parameter (unknown name, wrong type,
// out of range).
type ParamError struct {
	Algorithm string
	Param     string
	Msg       string
}

// Error formats the message naming the algorithm and parameter.
func (e *ParamError) Error() string {
	if e.Param == "" {
		return fmt.Sprintf("ml: %s: %s", e.Algorithm, e.Msg)
	}
	return fmt.Sprintf("ml: %s param %q: %s", e.Algorithm, e.Param, e.Msg)
}

// Permanent reports true: a bad parameter fails the same way every time.
func (e *ParamError) Permanent() bool { return true }

// ArtifactError reports an artifact that cannot be loaded: not an artifact,
// an unknown format version, a checksum mismatch or an inconsistent model.
type ArtifactError struct {
	Msg string
}

// Error returns the message.
func (e *ArtifactError) Error() string { return "ml: artifact: " + e.Msg }

// Permanent reports true: a corrupt artifact stays corrupt.
func (e *ArtifactError) Permanent() bool { return true }

func dataErr(row int, col string, format string, args ...any) error {
	return &DataError{Row: row, Column: col, Msg: fmt.Sprintf(format, args...)}
}

func artifactErr(format string, args ...any) error {
	return &ArtifactError{Msg: fmt.Sprintf(format, args...)}
}
