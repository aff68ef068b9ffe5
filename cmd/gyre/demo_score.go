package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/table"
)

// oipTensor is one tensor of an Open Inference Protocol v2 request or response.
type oipTensor struct {
	Name     string `json:"name"`
	Shape    []int  `json:"shape"`
	Datatype string `json:"datatype"`
	Data     []any  `json:"data"`
}

type oipRequest struct {
	Inputs []oipTensor `json:"inputs"`
}

type oipResponse struct {
	ModelName    string      `json:"model_name"`
	ModelVersion string      `json:"model_version"`
	Outputs      []oipTensor `json:"outputs"`
	Error        string      `json:"error"`
}

// serveURL is the deployer's OIP base for the pipeline, through gyre up's mux.
func (r *demoRun) serveURL() string {
	return r.st.HTTPURL + "/services/" + events.ServiceDeployer + "/v2/models/" + r.data.spec.Name()
}

// deployed reports whether the pipeline has a model serving.
func (r *demoRun) deployed(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.serveURL()+"/ready", nil)
	if err != nil {
		return false
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// scoreBatch asks the deployed model for predictions of rows [lo, hi) —
// before the loop sees them — counts the correct ones, and publishes the
// labels of the logged predictions. With no model deployed yet, the batch
// is not scored.
func (r *demoRun) scoreBatch(ctx context.Context, i int, b [2]int) error {
	if !r.deployed(ctx) {
		return nil
	}
	t := r.data.table
	var inputs []oipTensor
	for j, col := range t.Columns {
		if j == r.data.label {
			continue
		}
		tensor := oipTensor{Name: col, Shape: []int{b[1] - b[0]}, Datatype: "FP64"}
		numeric := true
		for k := b[0]; k < b[1]; k++ {
			if t.IsMissing(k, j) {
				continue
			}
			if _, err := strconv.ParseFloat(strings.TrimSpace(t.Rows[k][j]), 64); err != nil {
				numeric = false
				break
			}
		}
		if !numeric {
			tensor.Datatype = "BYTES"
		}
		for k := b[0]; k < b[1]; k++ {
			v := strings.TrimSpace(t.Rows[k][j])
			if numeric {
				if t.IsMissing(k, j) {
					tensor.Data = append(tensor.Data, nil)
					continue
				}
				f, _ := strconv.ParseFloat(v, 64)
				tensor.Data = append(tensor.Data, f)
			} else {
				tensor.Data = append(tensor.Data, v)
			}
		}
		inputs = append(inputs, tensor)
	}
	body, err := json.Marshal(oipRequest{Inputs: inputs})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.serveURL()+"/infer", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("batch %d: infer: %w", i+1, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusServiceUnavailable {
		return nil // deployed a moment ago and gone since (rollback to nothing): unscored
	}
	var out oipResponse
	if err := json.Unmarshal(raw, &out); err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("batch %d: infer answered %s: %s", i+1, resp.Status, strings.TrimSpace(string(raw)))
	}
	var predicted, ids []string
	for _, o := range out.Outputs {
		switch o.Name {
		case "predict":
			predicted = stringsOf(o.Data)
		case "prediction_id":
			ids = stringsOf(o.Data)
		}
	}
	n := b[1] - b[0]
	if len(predicted) != n {
		return fmt.Errorf("batch %d: infer returned %d predictions for %d rows", i+1, len(predicted), n)
	}
	labels := make([]*gyrev1.Label, 0, n)
	for k := 0; k < n; k++ {
		truth := canonicalLabel(t.Rows[b[0]+k][r.data.label])
		if canonicalLabel(predicted[k]) == truth {
			r.correct++
		}
		if k < len(ids) && ids[k] != "" {
			labels = append(labels, &gyrev1.Label{PredictionId: ids[k], Value: truth})
		}
	}
	r.scored += n
	if err := r.scoreStatic(ctx, b); err != nil {
		return fmt.Errorf("batch %d: static model: %w", i+1, err)
	}
	r.pendingLabels = labels
	if len(labels) > 0 {
		r.predictions++
	}
	return nil
}

// publishLabels sends the ground truth of the batch's logged predictions as
// label.received, once the deployer has logged them (it does so
// asynchronously) so that the monitor can join the two.
func (r *demoRun) publishLabels(ctx context.Context) error {
	labels := r.pendingLabels
	r.pendingLabels = nil
	if len(labels) == 0 {
		return nil
	}
	if err := r.waitPredictions(ctx); err != nil {
		return err
	}
	ev, err := events.New("/gyre/demo", r.data.spec.Name(), &gyrev1.LabelReceived{Pipeline: r.data.spec.Name(), Labels: labels})
	if err != nil {
		return err
	}
	return r.pub.Publish(ctx, ev)
}

// waitPredictions waits until the predictions stream holds as many logged
// predictions as the demo has asked for.
func (r *demoRun) waitPredictions(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := r.js.Stream(ctx, events.StreamPredictions)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs >= uint64(r.predictions) || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func stringsOf(data []any) []string {
	out := make([]string, len(data))
	for i, v := range data {
		switch x := v.(type) {
		case string:
			out[i] = x
		case float64:
			out[i] = strconv.FormatFloat(x, 'g', -1, 64)
		default:
			out[i] = fmt.Sprint(x)
		}
	}
	return out
}

// canonicalLabel compares class names the way the feature set stores them:
// "1", "1.0" and " 1" are one class.
func canonicalLabel(v string) string {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return v
}

// rowsOf returns rows [lo, hi) as a table (the static model scores it).
func (d *demoData) rowsOf(lo, hi int) *table.Table {
	t := &table.Table{Columns: d.table.Columns, Rows: d.table.Rows[lo:hi]}
	if d.table.Missing != nil {
		t.Missing = make([][]bool, hi-lo)
		for i := lo; i < hi && i < len(d.table.Missing); i++ {
			t.Missing[i-lo] = d.table.Missing[i]
		}
	}
	return t
}
