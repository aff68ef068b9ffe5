package ml

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// FormatV1 is the format tag of the artifacts Save writes.
const FormatV1 = "gyre.model/v1"

// MaxArtifactBytes bounds how much Load reads (after decompression), so a
// corrupt or hostile artifact cannot exhaust memory.
const MaxArtifactBytes = 1 << 30

// artifact is the JSON document of a saved model:
//
//	{"format":"gyre.model/v1","algorithm":"gbdt","params":{...},"seed":1,
//	 "signature":{...},"training":{...},"model":{...},"checksum":"sha256:..."}
//
// "model" is algorithm-specific (see logregPayload, gbdtPayload). Floats are
// written by encoding/json in the shortest form that parses back to the same
// float64, so a round trip is bit-exact. The checksum is the SHA-256 of the
// compact JSON encoding of the document without its checksum field, so any
// change to a parameter, threshold or leaf value is detected on Load.
type artifact struct {
	Format    string          `json:"format"`
	Algorithm string          `json:"algorithm"`
	Params    Params          `json:"params"`
	Seed      int64           `json:"seed"`
	Signature Signature       `json:"signature"`
	Training  TrainingInfo    `json:"training"`
	Model     json.RawMessage `json:"model"`
	Checksum  string          `json:"checksum,omitempty"`
}

// payloader is implemented by the models of this package.
type payloader interface {
	Model
	payload() any
}

// Save writes m as a gyre.model/v1 JSON artifact. The same model always
// gives the same bytes. Only models trained or loaded by this package can be
// saved.
func Save(w io.Writer, m Model) error {
	b, err := encodeArtifact(m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// SaveCompressed writes m like Save, gzip-compressed (about 3× smaller for
// GBDTs). Load detects the compression. The output is deterministic too (no
// timestamp or name in the gzip header).
func SaveCompressed(w io.Writer, m Model) error {
	b, err := encodeArtifact(m)
	if err != nil {
		return err
	}
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(b); err != nil {
		return err
	}
	return zw.Close()
}

func encodeArtifact(m Model) ([]byte, error) {
	pm, ok := m.(payloader)
	if !ok {
		return nil, fmt.Errorf("ml: cannot save model of type %T", m)
	}
	payload, err := json.Marshal(pm.payload())
	if err != nil {
		return nil, fmt.Errorf("ml: encoding model: %w", err)
	}
	info := m.Info()
	a := artifact{
		Format:    FormatV1,
		Algorithm: info.Algorithm,
		Params:    info.Params,
		Seed:      info.Seed,
		Signature: m.Signature(),
		Training:  info.Training,
		Model:     payload,
	}
	sum, err := checksum(a)
	if err != nil {
		return nil, err
	}
	a.Checksum = sum
	b, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("ml: encoding artifact: %w", err)
	}
	return append(b, '\n'), nil
}

func checksum(a artifact) (string, error) {
	a.Checksum = ""
	b, err := json.Marshal(a)
	if err != nil {
		return "", fmt.Errorf("ml: encoding artifact: %w", err)
	}
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:]), nil
}

// Load reads an artifact written by Save or SaveCompressed. It checks the
// format tag, the checksum and the consistency of the whole model (array
// lengths, node indices, tree shape, finite values) and returns an
// *ArtifactError for anything wrong; it never panics on bad input.
func Load(r io.Reader) (Model, error) {
	return load(r, true)
}

// load is Load with the checksum check optional: the fuzz test turns it off
// to reach the structural checks with mutated input.
func load(r io.Reader, verify bool) (Model, error) {
	br := bufio.NewReader(r)
	var src io.Reader = br
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, artifactErr("gzip: %v", err)
		}
		defer zr.Close()
		src = zr
	}
	data, err := io.ReadAll(io.LimitReader(src, MaxArtifactBytes+1))
	if err != nil {
		return nil, artifactErr("reading: %v", err)
	}
	if len(data) > MaxArtifactBytes {
		return nil, artifactErr("larger than %d bytes", MaxArtifactBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, artifactErr("empty input")
	}
	var a artifact
	if err := strictUnmarshal(data, &a); err != nil {
		return nil, artifactErr("not a valid artifact: %v", err)
	}
	if a.Format != FormatV1 {
		return nil, artifactErr("unsupported format %q (want %q)", a.Format, FormatV1)
	}
	if verify {
		if a.Checksum == "" {
			return nil, artifactErr("missing checksum")
		}
		want, err := checksum(a)
		if err != nil {
			return nil, artifactErr("%v", err)
		}
		if a.Checksum != want {
			return nil, artifactErr("checksum mismatch: the artifact was modified or corrupted")
		}
	}
	alg, err := lookupAlgorithm(a.Algorithm)
	if err != nil {
		return nil, artifactErr("%v", err)
	}
	params, err := parseParams(alg.name, alg.params, a.Params)
	if err != nil {
		return nil, artifactErr("%v", err)
	}
	if err := a.Signature.validate(); err != nil {
		return nil, artifactErr("signature: %v", err)
	}
	t := a.Training
	if t.Rows < 0 || t.Iterations < 0 || t.ValidationRows < 0 {
		return nil, artifactErr("training: negative count")
	}
	if t.ClassCounts != nil && len(t.ClassCounts) != len(a.Signature.Classes) {
		return nil, artifactErr("training: %d class counts for %d classes", len(t.ClassCounts), len(a.Signature.Classes))
	}
	if len(a.Model) == 0 || string(a.Model) == "null" {
		return nil, artifactErr("no model section")
	}
	info := ModelInfo{Algorithm: alg.name, Params: params, Seed: a.Seed, Training: t}
	return alg.decode(a.Model, a.Signature, info)
}

// strictUnmarshal decodes exactly one JSON value with no unknown fields and
// nothing after it.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON document")
	}
	return nil
}
