package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// YAML renders v — anything encoding/json encodes, with its json field
// names and order — as YAML the way specs are written: block mappings,
// each mapping in a list on one line in flow style (as the columns of
// spec.dataset.schema are: `- {name: x, type: float, min: 0, max: 1}`),
// strings quoted only where YAML would read them as something else ("0",
// "true"). A list of columns printed so pastes into a spec as it is.
func YAML(v any) ([]byte, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	// JSON is YAML: decoding it keeps the keys in their order.
	var doc yaml.Node
	if err := yaml.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	restyle(&doc, false)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	return buf.Bytes(), nil
}

// restyle drops the JSON styles (flow collections, double-quoted strings)
// and puts the mappings of a list, and what they hold, in flow style.
func restyle(n *yaml.Node, inList bool) {
	n.Style = 0
	switch {
	case n.Kind == yaml.MappingNode && inList:
		n.Style = yaml.FlowStyle
	case n.Kind == yaml.SequenceNode && inList:
		n.Style = yaml.FlowStyle
	}
	for _, c := range n.Content {
		restyle(c, inList || n.Kind == yaml.SequenceNode && c.Kind == yaml.MappingNode)
	}
}
