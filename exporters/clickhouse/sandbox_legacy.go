package clickhouse

import (
	"fmt"
	"strings"
)

// ClickHouse 18.16 has no EXPLAIN AST and no formatQuery: its parser cannot
// be asked for a statement's tree. On such servers layer 1 works on the
// statement's tokens (ClickHouse's lexical rules, refusing every construct
// where 18.16 and a newer lexer could disagree) and the server's restricted
// profile carries the rest: readonly=1 there refuses every table function,
// every setting override and every write (proven by TestSandboxServer).

type tokKind uint8

const (
	tokWord        tokKind = iota // bare word: keyword or identifier
	tokQuotedIdent                // `x` or "x" (text without the quotes, escapes kept)
	tokString                     // 'x'
	tokNumber
	tokPunct
)

type token struct {
	kind tokKind
	text string
}

// lexSQL splits sql into tokens, dropping whitespace and comments. It
// refuses what it cannot read the way every ClickHouse version reads it:
// nested comments (18.16 ends a comment at the first */), # comments and
// $ heredocs or parameters (newer versions only), NUL bytes, anything
// unterminated.
func lexSQL(sql string) ([]token, error) {
	var toks []token
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == 0:
			return nil, refused("NUL byte in the statement")
		case strings.HasPrefix(sql[i:], "--"):
			end := strings.IndexByte(sql[i:], '\n')
			if end < 0 {
				return toks, nil
			}
			i += end + 1
		case strings.HasPrefix(sql[i:], "/*"):
			end := strings.Index(sql[i+2:], "*/")
			if end < 0 {
				return nil, refused("unterminated comment")
			}
			if strings.Contains(sql[i+2:i+2+end], "/*") {
				return nil, refused("nested comment")
			}
			i += 2 + end + 2
		case c == '#' || c == '$' || c == '{' || c == '}':
			return nil, refused("%q outside quotes", c)
		case c == '\'' || c == '`' || c == '"':
			j := i + 1
			for ; j < len(sql); j++ {
				if sql[j] == '\\' {
					j++
					continue
				}
				if sql[j] == c {
					if j+1 < len(sql) && sql[j+1] == c { // doubled quote
						j++
						continue
					}
					break
				}
			}
			if j >= len(sql) {
				return nil, refused("unterminated %c quote", c)
			}
			kind := tokQuotedIdent
			if c == '\'' {
				kind = tokString
			}
			toks = append(toks, token{kind, sql[i+1 : j]})
			i = j + 1
		case isWordStart(c):
			j := i + 1
			for j < len(sql) && isWordByte(sql[j]) {
				j++
			}
			toks = append(toks, token{tokWord, sql[i:j]})
			i = j
		case c >= '0' && c <= '9':
			j := i + 1
			for j < len(sql) && (isWordByte(sql[j]) || sql[j] == '.' ||
				(sql[j] == '-' || sql[j] == '+') && strings.ContainsRune("eEpP", rune(sql[j-1]))) {
				j++
			}
			toks = append(toks, token{tokNumber, sql[i:j]})
			i = j
		default:
			toks = append(toks, token{tokPunct, sql[i : i+1]})
			i++
		}
	}
	return toks, nil
}

func isWordStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isWordByte(c byte) bool { return isWordStart(c) || c >= '0' && c <= '9' }

// checkTokens is layer 1 for servers without EXPLAIN AST: one SELECT (or
// DESCRIBE of a table), no SETTINGS, FORMAT or INTO OUTFILE, no denied
// function or table function, no system table but the allowed ones. It
// returns the statement to run (without a trailing semicolon).
func (p *policy) checkTokens(sql string) (string, error) {
	toks, err := lexSQL(sql)
	if err != nil {
		return "", err
	}
	if n := len(toks); n > 0 && toks[n-1] == (token{tokPunct, ";"}) {
		toks = toks[:n-1]
		sql = sql[:strings.LastIndexByte(sql, ';')]
	}
	if len(toks) == 0 {
		return "", refused("empty statement")
	}
	first := 0
	for first < len(toks) && toks[first] == (token{tokPunct, "("}) {
		first++
	}
	if first == len(toks) || toks[first].kind != tokWord {
		return "", refused("statement that is not a SELECT")
	}
	switch kw := strings.ToUpper(toks[first].text); kw {
	case "SELECT", "WITH":
	case "DESCRIBE", "DESC":
		return sql, p.checkDescribeTokens(toks[first+1:])
	default:
		return "", refused("%s statement", kw)
	}
	word := func(t token) bool { return t.kind == tokWord || t.kind == tokQuotedIdent }
	for i, t := range toks {
		next := token{}
		if i+1 < len(toks) {
			next = toks[i+1]
		}
		if t == (token{tokPunct, ";"}) {
			return "", refused("more than one statement")
		}
		if t.kind == tokWord {
			switch strings.ToUpper(t.text) {
			case "SETTINGS":
				return "", refused("SETTINGS clause")
			case "INTO", "OUTFILE":
				return "", refused("INTO OUTFILE")
			case "FORMAT":
				if next != (token{tokPunct, "("}) {
					return "", refused("FORMAT clause")
				}
			}
		}
		if !word(t) {
			continue
		}
		if next == (token{tokPunct, "("}) {
			if err := p.checkFunction(t.text); err != nil {
				return "", err
			}
		}
		if db := strings.ToLower(t.text); (db == "system" || db == "information_schema") && next == (token{tokPunct, "."}) {
			table := ""
			if i+2 < len(toks) && word(toks[i+2]) {
				table = toks[i+2].text
			}
			if err := p.checkTable("system." + table); err != nil {
				return "", refused("table %s.%s", t.text, table)
			}
		}
	}
	return sql, nil
}

// checkDescribeTokens admits DESCRIBE [TABLE] name or db.name.
func (p *policy) checkDescribeTokens(toks []token) error {
	if len(toks) > 0 && toks[0].kind == tokWord && strings.EqualFold(toks[0].text, "TABLE") {
		toks = toks[1:]
	}
	ident := func(t token) bool { return t.kind == tokWord || t.kind == tokQuotedIdent }
	switch {
	case len(toks) == 1 && ident(toks[0]):
		return nil
	case len(toks) == 3 && ident(toks[0]) && toks[1] == (token{tokPunct, "."}) && ident(toks[2]):
		return p.checkTable(fmt.Sprintf("%s.%s", toks[0].text, toks[2].text))
	}
	return refused("DESCRIBE of anything but a table")
}
