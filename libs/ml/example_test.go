package ml_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/gyrehq/gyre/libs/ml"
)

// Example shows the trainer → evaluator → deployer path: read a batch,
// train, score, save the artifact, load it and serve a raw record.
func Example() {
	var csv strings.Builder
	csv.WriteString("price,demand,class\n")
	for i := 0; i < 200; i++ {
		price := float64(i%20) / 20
		class := "DOWN"
		if price > 0.5 {
			class = "UP"
		}
		fmt.Fprintf(&csv, "%g,%g,%s\n", price, float64(i%7)/7, class)
	}
	d, err := ml.ReadCSV(strings.NewReader(csv.String()), ml.CSVOptions{Label: "class"})
	if err != nil {
		panic(err)
	}
	m, err := ml.Train(context.Background(), "gbdt", ml.Params{"trees": 10, "minSamplesLeaf": 5}, d, ml.TrainOptions{Seed: 1})
	if err != nil {
		panic(err)
	}
	scores, err := ml.Evaluate(m, d)
	if err != nil {
		panic(err)
	}
	fmt.Printf("accuracy %.2f\n", scores["accuracy"])

	var artifact bytes.Buffer
	if err := ml.Save(&artifact, m); err != nil {
		panic(err)
	}
	served, err := ml.Load(&artifact)
	if err != nil {
		panic(err)
	}
	x, err := served.Signature().EncodeRecords([]map[string]string{{"price": "0.9", "demand": "0.3"}})
	if err != nil {
		panic(err)
	}
	sig := served.Signature()
	fmt.Println("classes", sig.Classes, "prediction", sig.Classes[int(served.Predict(x)[0])])
	// Output:
	// accuracy 1.00
	// classes [DOWN UP] prediction UP
}
