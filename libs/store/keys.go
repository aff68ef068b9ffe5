package store

import (
	"encoding/base64"
	"strconv"
)

// BatchKey returns a batch id as one token of a KV key. Producers choose
// batch ids freely (up to 200 characters: colons, spaces, dots), but a KV
// key token may only hold A-Z, a-z, 0-9, '-' and '_' without changing the
// key's shape. An id made of those characters only is its own key, so keys
// stay readable; any other id becomes "=" + its unpadded base64url encoding,
// which cannot collide with a plain one because '=' is never in a plain one.
func BatchKey(batchID string) string {
	if batchID != "" && plainToken(batchID) {
		return batchID
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(batchID))
}

func plainToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' {
			continue
		}
		return false
	}
	return true
}

// IngestKey is the gyre-state key of ingest's record of a batch content:
// ingest.<pipeline>.<sha256>.
func IngestKey(pipeline, sha256 string) string { return "ingest." + pipeline + "." + sha256 }

// IngestIDKey is the gyre-state key that binds a batch id to the content it
// was first used for: ingest.<pipeline>.id.<batch key>.
func IngestIDKey(pipeline, batchID string) string {
	return "ingest." + pipeline + ".id." + BatchKey(batchID)
}

// SchemaKey is the gyre-state key of a pipeline's inferred schema.
func SchemaKey(pipeline string) string { return "schema." + pipeline }

// RejectedKey is the gyre-state key of a rejected batch's reasons.
func RejectedKey(pipeline, batchID string) string {
	return "rejected." + pipeline + "." + BatchKey(batchID)
}

// OnlineKey is the gyre-online key of one materialised row (1-based, as
// rows are numbered everywhere else): <pipeline>.<batch key>.<row>.
func OnlineKey(pipeline, batchID string, row int) string {
	return pipeline + "." + BatchKey(batchID) + "." + strconv.Itoa(row)
}
