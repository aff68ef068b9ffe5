package serving

import (
	"math"
	"strconv"
	"strings"
)

// Frame is the rows of a request, column by column, typed as the client
// sent them: the HTTP port fills it and the model encodes it straight into
// its inputs, with no text or per-row map in between.
type Frame struct {
	// Rows is the number of rows; every column has that many values.
	Rows int
	// Columns are the inputs given, each a raw feature column by name.
	Columns []Column
}

// Column is one raw feature column of a frame: numbers, or text.
type Column struct {
	Name string
	// Numbers holds the values of a column sent as numbers (or booleans,
	// as 1 and 0); NaN is a missing value. Nil for a text column.
	Numbers []float64
	// Bool marks numbers that came as booleans: as text they read true
	// and false.
	Bool bool
	// Text holds the values of a column sent as strings.
	Text []string
	// Missing marks missing values of Text; nil when none is.
	Missing []bool
}

// Column returns the column of a name, or nil.
func (f *Frame) Column(name string) *Column {
	for i := range f.Columns {
		if f.Columns[i].Name == name {
			return &f.Columns[i]
		}
	}
	return nil
}

// Number returns row i as a number: NaN when it is missing, or text that
// is not a number (true and false read 1 and 0).
func (c *Column) Number(i int) float64 {
	if c == nil {
		return math.NaN()
	}
	if c.Text == nil {
		return c.Numbers[i]
	}
	if c.Missing != nil && c.Missing[i] {
		return math.NaN()
	}
	s := strings.TrimSpace(c.Text[i])
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		switch strings.ToLower(s) {
		case "true":
			return 1
		case "false":
			return 0
		}
		return math.NaN()
	}
	return x
}

// Value returns row i as text, and false when it is missing.
func (c *Column) Value(i int) (string, bool) {
	switch {
	case c == nil:
		return "", false
	case c.Text != nil:
		if c.Missing != nil && c.Missing[i] {
			return "", false
		}
		return c.Text[i], true
	}
	x := c.Numbers[i]
	switch {
	case math.IsNaN(x):
		return "", false
	case c.Bool:
		return strconv.FormatBool(x != 0), true
	}
	return strconv.FormatFloat(x, 'g', -1, 64), true
}

// frame returns the request's rows as a frame: its Inputs, or its
// Records read as text columns.
func (r *Request) frame() *Frame {
	if r.Inputs != nil {
		return r.Inputs
	}
	f := &Frame{Rows: len(r.Records)}
	for _, name := range r.Columns {
		c := Column{Name: name, Text: make([]string, len(r.Records))}
		for i, rec := range r.Records {
			v, ok := rec[name]
			if !ok {
				if c.Missing == nil {
					c.Missing = make([]bool, len(r.Records))
				}
				c.Missing[i] = true
			}
			c.Text[i] = v
		}
		f.Columns = append(f.Columns, c)
	}
	return f
}

// Len returns the number of rows of a request.
func (r *Request) Len() int {
	if r.Inputs != nil {
		return r.Inputs.Rows
	}
	return len(r.Records)
}

// Row returns row i as a record (column → text, absent when missing).
func (r *Request) Row(i int) map[string]string {
	if r.Inputs == nil {
		return r.Records[i]
	}
	rec := make(map[string]string, len(r.Inputs.Columns))
	for k := range r.Inputs.Columns {
		c := &r.Inputs.Columns[k]
		if v, ok := c.Value(i); ok {
			rec[c.Name] = v
		}
	}
	return rec
}
