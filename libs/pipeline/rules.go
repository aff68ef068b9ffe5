package pipeline

import (
	"fmt"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
)

// RuleSet is a spec's compiled row rules: CEL expressions over one row, bound
// as the map `row` (row.nswprice, row["odd name"]). Numeric columns are
// doubles, bool columns bools, the rest strings; a missing value is absent
// from the map, so `has(row.x)` tests for it.
type RuleSet struct {
	rules []compiledRule
}

type compiledRule struct {
	source string
	prg    cel.Program
}

func ruleEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("row", cel.MapType(cel.StringType, cel.DynType)),
		cel.CrossTypeNumericComparisons(true),
	)
}

// CompileRule checks that rule is a CEL expression over `row` that yields a
// bool; schema, when given, lets it name unknown columns.
func CompileRule(rule string, schema []Column) error {
	_, err := compileRule(rule, schema)
	return err
}

func compileRule(rule string, schema []Column) (cel.Program, error) {
	env, err := ruleEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(rule)
	if iss.Err() != nil {
		return nil, fmt.Errorf("CEL: %v", iss.Err())
	}
	if t := ast.OutputType(); !t.IsExactType(types.BoolType) && !t.IsExactType(types.DynType) {
		return nil, fmt.Errorf("CEL rule %q yields %s, not bool", rule, t)
	}
	if len(schema) > 0 {
		known := map[string]bool{}
		for _, c := range schema {
			known[c.Name] = true
		}
		for _, name := range rowFields(ast) {
			if !known[name] {
				return nil, fmt.Errorf("CEL rule %q names row.%s, which is not a column of spec.dataset.schema", rule, name)
			}
		}
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("CEL: %v", err)
	}
	return prg, nil
}

// NewRuleSet compiles rules (already checked by Parse).
func NewRuleSet(rules []string, schema []Column) (*RuleSet, error) {
	rs := &RuleSet{}
	for i, r := range rules {
		prg, err := compileRule(r, schema)
		if err != nil {
			return nil, fmt.Errorf("spec.dataset.rules[%d]: %w", i, err)
		}
		rs.rules = append(rs.rules, compiledRule{source: r, prg: prg})
	}
	return rs, nil
}

// Len returns the number of rules.
func (rs *RuleSet) Len() int { return len(rs.rules) }

// Violation is a rule a row broke, or could not be evaluated on.
type Violation struct {
	Rule    int
	Source  string
	Message string
}

// Check evaluates every rule on one row and returns those that do not hold.
// A rule that errors (a missing column, a type mismatch) is a violation too,
// with the CEL error as its message.
func (rs *RuleSet) Check(row map[string]any) []Violation {
	var out []Violation
	for i, r := range rs.rules {
		v, _, err := r.prg.Eval(map[string]any{"row": row})
		if err != nil {
			out = append(out, Violation{Rule: i, Source: r.source, Message: err.Error()})
			continue
		}
		if b, ok := v.Value().(bool); !ok || !b {
			msg := "false"
			if !ok {
				msg = fmt.Sprintf("yields %v, not bool", v.Value())
			}
			out = append(out, Violation{Rule: i, Source: r.source, Message: msg})
		}
	}
	return out
}

// rowFields returns the columns an expression names as row.<column> or row["column"].
func rowFields(a *cel.Ast) []string {
	var out []string
	celast.PostOrderVisit(a.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		switch e.Kind() {
		case celast.SelectKind:
			sel := e.AsSelect()
			if op := sel.Operand(); op.Kind() == celast.IdentKind && op.AsIdent() == "row" {
				out = append(out, sel.FieldName())
			}
		case celast.CallKind:
			call := e.AsCall()
			if call.FunctionName() == "_[_]" && len(call.Args()) == 2 {
				op, key := call.Args()[0], call.Args()[1]
				if op.Kind() == celast.IdentKind && op.AsIdent() == "row" && key.Kind() == celast.LiteralKind {
					if s, ok := key.AsLiteral().Value().(string); ok {
						out = append(out, s)
					}
				}
			}
		}
	}))
	return out
}
