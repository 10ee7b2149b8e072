package clickhouse

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The query sandbox, layer 1: a user statement is parsed by the engine's
// own parser (formatQuery for one canonical statement, EXPLAIN AST for its
// tree) and admitted only when every node of the tree is on the lists
// below. Layer 2 is the engine's own restriction of what the admitted
// statement may do (readonly, limits, the engine user's grants: see
// embedded.go and the server profile in docs/clickhouse.md).

// ErrNotReadOnly is returned (wrapped in a *RefusedError) for statements
// the query path refuses.
var ErrNotReadOnly = errors.New("only one read-only SELECT on the flows database is allowed")

// RefusedError says what part of a statement the sandbox refused.
type RefusedError struct {
	What string // e.g. "table function file"
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("refused: %s (%v)", e.What, ErrNotReadOnly)
}

func (e *RefusedError) Unwrap() error { return ErrNotReadOnly }

func refused(format string, args ...any) error {
	return &RefusedError{What: fmt.Sprintf(format, args...)}
}

// MaxSQLBytes bounds the text of one user statement.
const MaxSQLBytes = 64 << 10

// allowedTableFunctions are the table functions a user statement may name:
// they generate rows from their arguments and read nothing. Every other
// table function (file, url, s3, remote, executable, … and any the engine
// adds later) is refused.
var allowedTableFunctions = map[string]bool{
	"numbers": true, "numbers_mt": true, "values": true, "generate_series": true, "generateSeries": true,
}

// allowedSystemTables are the system tables a user statement may name:
// constant row generators. sextant's own statements (migrations read
// system.columns) do not go through the sandbox.
var allowedSystemTables = map[string]bool{
	"system.one": true, "system.numbers": true, "system.numbers_mt": true,
}

// deniedFunctions read files, dictionaries, other tables, the network, the
// engine's configuration or its process, whatever their arguments
// (lower-case names; the engine adds the functions of deniedCategories).
var deniedFunctions = map[string]string{
	"file":                             "reads files",
	"joinget":                          "reads other tables",
	"joingetornull":                    "reads other tables",
	"hascolumnintable":                 "reads other tables' metadata (and, on old servers, connects to hosts)",
	"catboostevaluate":                 "loads model files",
	"modelevaluate":                    "loads models",
	"naivebayesclassifier":             "loads models",
	"naivebayesclassifierwithprob":     "loads models",
	"naivebayesclassifierwithallprobs": "loads models",
	"showcertificate":                  "reads the engine's certificate",
	"getclienthttpheader":              "reads the engine's clients' headers",
	"getserversetting":                 "reads the engine's configuration",
	"getmergetreesetting":              "reads the engine's configuration",
	"getmacro":                         "reads the engine's configuration",
	"filesystemavailable":              "reads the engine's file system",
	"filesystemcapacity":               "reads the engine's file system",
	"filesystemunreserved":             "reads the engine's file system",
	"zookeepersessionuptime":           "talks to Keeper",
	"generateserialid":                 "writes to Keeper",
}

// deniedCategories of system.functions, refused whole: dictionaries read
// their sources, AI functions call remote models, introspection reads the
// engine's process.
var deniedCategories = []string{"Dictionary", "Embedded Dictionary", "AI", "Introspection"}

// deniedPrefixes catch the dictionary functions on engines whose
// system.functions has no categories (18.16).
var deniedPrefixes = []string{"dictget", "dicthas", "dictisin"}

// inFunctions take a table (or set) as their second argument.
var inFunctions = map[string]bool{
	"in": true, "notIn": true, "globalIn": true, "globalNotIn": true, "nullIn": true, "notNullIn": true,
	"globalNullIn": true, "globalNotNullIn": true, "inIgnoreSet": true, "notInIgnoreSet": true,
	"globalInIgnoreSet": true, "globalNotInIgnoreSet": true,
}

// astNodeTypes are the EXPLAIN AST nodes a SELECT may consist of. Any
// other node (Set for SETTINGS, ColumnsApplyTransformer, which names a
// function the dump does not show, nodes of other statements, nodes of
// syntax added later) is refused.
var astNodeTypes = map[string]bool{
	"SelectWithUnionQuery": true, "SelectIntersectExceptQuery": true, "SelectQuery": true,
	"ExpressionList": true, "TablesInSelectQuery": true, "TablesInSelectQueryElement": true,
	"TableExpression": true, "TableIdentifier": true, "TableJoin": true, "ArrayJoin": true,
	"Subquery": true, "WithElement": true, "Identifier": true, "Function": true, "Literal": true,
	"Asterisk": true, "QualifiedAsterisk": true, "ColumnsRegexpMatcher": true, "ColumnsListMatcher": true,
	"QualifiedColumnsRegexpMatcher": true, "QualifiedColumnsListMatcher": true,
	"ColumnsTransformerList": true, "ColumnsExceptTransformer": true, "ColumnsReplaceTransformer": true,
	"ColumnsReplaceTransformer::Replacement": true, "OrderByElement": true, "WindowDefinition": true,
	"WindowListElement": true, "SampleRatio": true, "InterpolateElement": true, "DescribeQuery": true,
}

// policy is what a statement may reach; the function lists come from the
// engine (system.functions, system.table_functions).
type policy struct {
	database       string
	tableFunctions map[string]bool   // every table function the engine has
	denied         map[string]string // lower-case name → why
}

func newPolicy(database string) *policy {
	p := &policy{database: database, tableFunctions: map[string]bool{}, denied: map[string]string{}}
	for name, why := range deniedFunctions {
		p.denied[name] = why
	}
	return p
}

func (p *policy) functionDenied(name string) (string, bool) {
	lower := strings.ToLower(name)
	if why, ok := p.denied[lower]; ok {
		return why, true
	}
	for _, prefix := range deniedPrefixes {
		if strings.HasPrefix(lower, prefix) {
			return "reads dictionaries", true
		}
	}
	return "", false
}

// checkFunction admits a function call outside a table position.
func (p *policy) checkFunction(name string) error {
	if why, denied := p.functionDenied(name); denied {
		return refused("function %s (%s)", name, why)
	}
	// A table function's name is refused in expressions too (x IN
	// url(…)): whether the engine would run it as a table function there
	// is not for the check to guess.
	if p.isTableFunction(name) && !allowedTableFunctions[name] && !ordinaryTableFunctions[name] {
		return refused("table function %s", name)
	}
	return nil
}

// ordinaryTableFunctions are harmless ordinary functions that share their
// name with a table function.
var ordinaryTableFunctions = map[string]bool{"format": true, "fuzzQuery": true}

func (p *policy) isTableFunction(name string) bool {
	return p.tableFunctions[strings.ToLower(name)]
}

// checkTableFunction admits a function in a table position.
func (p *policy) checkTableFunction(name string) error {
	if !allowedTableFunctions[name] {
		return refused("table function %s (allowed: %s)", name, strings.Join(sortedKeys(allowedTableFunctions), ", "))
	}
	return nil
}

// checkTable admits a table name as EXPLAIN AST prints it: db.table, or a
// bare name that is a WITH alias or a table of the default database (the
// flows database). The dump does not show quoting, so a name with a dot
// is taken as qualified; every reading of an admitted name is a table of
// the flows database or an allowed system table.
func (p *policy) checkTable(name string) error {
	if !strings.Contains(name, ".") || strings.HasPrefix(name, p.database+".") || allowedSystemTables[name] {
		return nil
	}
	return refused("table %s (only tables of database %s, and %s)", name, p.database, strings.Join(sortedKeys(allowedSystemTables), ", "))
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// astNode is one line of EXPLAIN AST: "<indent>Type [name] [(alias a)]
// [(children n)]".
type astNode struct {
	typ, name, alias string
	children         []*astNode
}

var astLine = regexp.MustCompile(`^( *)(\S+)(.*?)(?: \(children (\d+)\))?$`)

// parseAST rebuilds the tree from EXPLAIN AST text and checks that every
// node has the children it announces.
func parseAST(dump string) (*astNode, error) {
	lines := strings.Split(strings.TrimRight(dump, "\n"), "\n")
	type frame struct {
		node  *astNode
		depth int
		want  int
	}
	var stack []frame
	var root *astNode
	for i, line := range lines {
		m := astLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("EXPLAIN AST line %d: %q", i+1, line)
		}
		depth := len(m[1])
		if m[3] != "" && m[3][0] != ' ' {
			return nil, fmt.Errorf("EXPLAIN AST line %d: %q", i+1, line)
		}
		n := &astNode{typ: m[2], name: strings.TrimPrefix(m[3], " ")}
		if before, alias, ok := strings.Cut(n.name, " (alias "); ok && strings.HasSuffix(alias, ")") {
			n.name, n.alias = before, strings.TrimSuffix(alias, ")")
		}
		want := 0
		if m[4] != "" {
			want, _ = strconv.Atoi(m[4])
		}
		for len(stack) > 0 && stack[len(stack)-1].depth >= depth {
			top := stack[len(stack)-1]
			if len(top.node.children) != top.want {
				return nil, fmt.Errorf("EXPLAIN AST line %d: %s has %d children, announced %d", i+1, top.node.typ, len(top.node.children), top.want)
			}
			stack = stack[:len(stack)-1]
		}
		switch {
		case len(stack) == 0 && root == nil && depth == 0:
			root = n
		case len(stack) > 0 && depth == stack[len(stack)-1].depth+1:
			parent := stack[len(stack)-1].node
			parent.children = append(parent.children, n)
		default:
			return nil, fmt.Errorf("EXPLAIN AST line %d: unexpected depth %d", i+1, depth)
		}
		stack = append(stack, frame{n, depth, want})
	}
	for _, f := range stack {
		if len(f.node.children) != f.want {
			return nil, fmt.Errorf("EXPLAIN AST: %s has %d children, announced %d", f.node.typ, len(f.node.children), f.want)
		}
	}
	if root == nil {
		return nil, errors.New("EXPLAIN AST: empty")
	}
	return root, nil
}

// checkAST admits one SELECT (WITH, UNION, INTERSECT, EXCEPT, subqueries
// and joins included) or DESCRIBE of a table, reaching only what p allows.
func (p *policy) checkAST(root *astNode) error {
	switch root.typ {
	case "SelectWithUnionQuery":
	case "DescribeQuery":
		if len(root.children) != 1 || root.children[0].typ != "TableExpression" {
			return refused("DESCRIBE of anything but a table")
		}
	default:
		return refused("%s statement", strings.TrimSuffix(root.typ, "Query"))
	}
	return p.checkNode(root, nil)
}

func (p *policy) checkNode(n, parent *astNode) error {
	if !astNodeTypes[n.typ] {
		switch n.typ {
		case "Set":
			return refused("SETTINGS clause")
		case "ColumnsApplyTransformer":
			return refused("APPLY column transformer")
		case "QueryParameter":
			return refused("query parameter")
		}
		return refused("syntax %s", n.typ)
	}
	switch n.typ {
	case "SelectWithUnionQuery":
		// ExpressionList of the selects, then INTO OUTFILE (a Literal),
		// SETTINGS (Set), FORMAT (an Identifier).
		if len(n.children) == 0 || n.children[0].typ != "ExpressionList" {
			return refused("SELECT without a select list")
		}
		for _, c := range n.children[1:] {
			switch c.typ {
			case "Literal":
				return refused("INTO OUTFILE")
			case "Set":
				return refused("SETTINGS clause")
			case "Identifier":
				return refused("FORMAT clause")
			}
			return refused("%s after SELECT", c.typ)
		}
	case "TableIdentifier":
		if err := p.checkTable(n.name); err != nil {
			return err
		}
	case "Function":
		if parent != nil && parent.typ == "TableExpression" {
			if err := p.checkTableFunction(n.name); err != nil {
				return err
			}
		} else if err := p.checkFunction(n.name); err != nil {
			return err
		}
		// x IN db.table names a table (a function there is checked as
		// every function is).
		if inFunctions[n.name] && len(n.children) == 1 && len(n.children[0].children) == 2 {
			if set := n.children[0].children[1]; set.typ == "Identifier" {
				if err := p.checkTable(set.name); err != nil {
					return err
				}
			}
		}
	}
	for _, c := range n.children {
		if err := p.checkNode(c, n); err != nil {
			return err
		}
	}
	return nil
}

// checkIdentifiers refuses quoted identifiers that could make EXPLAIN AST
// text ambiguous (the dump prints names raw): control characters,
// backslash escapes, and the dump's own markers. sql is formatQuery output.
func checkIdentifiers(sql string) error {
	toks, err := lexSQL(sql)
	if err != nil {
		return err
	}
	for _, t := range toks {
		if t.kind != tokQuotedIdent {
			continue
		}
		if strings.ContainsAny(t.text, "\\") || strings.Contains(t.text, " (alias ") || strings.Contains(t.text, " (children ") {
			return refused("identifier %s", t.text)
		}
		for _, r := range t.text {
			if r < 0x20 || r == 0x7f {
				return refused("identifier %q (control character)", t.text)
			}
		}
	}
	return nil
}
