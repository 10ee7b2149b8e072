package http1

import "bytes"

// lineKind classifies the first line of a message. The kernel ships reads
// and writes, not messages, so the decoder has to recognise where a message
// begins before it hands the header block to net/http; this is only that
// recognition, never field parsing.
type lineKind uint8

const (
	lineInvalid  lineKind = iota // cannot be an HTTP/1.x start line
	linePartial                  // a valid prefix: no line end seen yet
	lineRequest                  // "METHOD target HTTP/1.x"
	lineResponse                 // "HTTP/1.x ddd reason"
)

// maxStartLine bounds how far a start line is looked for; net/http's own
// limits are larger, but a longer first line is not worth waiting for.
const maxStartLine = 8 << 10

// classifyStartLine says whether b begins with an HTTP/1.x request or status
// line, could still become one, or cannot.
func classifyStartLine(b []byte) lineKind {
	line, complete := b, false
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		line, complete = b[:i], true
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
	}
	if !complete && len(line) > maxStartLine {
		return lineInvalid
	}
	if prefixMatch(line, "HTTP/") {
		return statusLine(line, complete)
	}
	return requestLine(line, complete)
}

// prefixMatch reports whether b starts with lit, or is a prefix of lit.
func prefixMatch(b []byte, lit string) bool {
	n := min(len(b), len(lit))
	return string(b[:n]) == lit[:n]
}

// statusLine checks "HTTP/1.D SP DDD [SP reason]".
func statusLine(line []byte, complete bool) lineKind {
	const version = "HTTP/1."
	if !prefixMatch(line, version) {
		return lineInvalid
	}
	rest := line[min(len(line), len(version)):]
	// digit, SP, three digits
	want := []func(byte) bool{isDigit, isSP, isDigit, isDigit, isDigit}
	for i, ok := range want {
		if i >= len(rest) {
			if complete {
				return lineInvalid
			}
			return linePartial
		}
		if !ok(rest[i]) {
			return lineInvalid
		}
	}
	rest = rest[len(want):]
	if len(rest) > 0 {
		if rest[0] != ' ' || !fieldText(rest[1:]) {
			return lineInvalid
		}
	}
	if !complete {
		return linePartial
	}
	return lineResponse
}

// requestLine checks "METHOD SP target SP HTTP/1.D". Methods are restricted
// to upper-case letters, '-' and '_': every registered method fits, and it
// keeps body bytes from passing as a request line during resync.
func requestLine(line []byte, complete bool) lineKind {
	i := 0
	for i < len(line) && (line[i] >= 'A' && line[i] <= 'Z' || line[i] == '-' || line[i] == '_') {
		i++
	}
	if i > 24 || (i == 0 && len(line) > 0) {
		return lineInvalid
	}
	if i == len(line) {
		return partialOrInvalid(complete)
	}
	if line[i] != ' ' || i == 0 {
		return lineInvalid
	}
	i++
	start := i
	for i < len(line) && line[i] > ' ' && line[i] != 0x7f {
		i++
	}
	if i == len(line) {
		return partialOrInvalid(complete)
	}
	if line[i] != ' ' || i == start {
		return lineInvalid
	}
	proto := line[i+1:]
	const version = "HTTP/1."
	if !prefixMatch(proto, version) {
		return lineInvalid
	}
	if len(proto) <= len(version) {
		return partialOrInvalid(complete)
	}
	if len(proto) > len(version)+1 || !isDigit(proto[len(version)]) {
		return lineInvalid
	}
	if !complete {
		return linePartial
	}
	return lineRequest
}

func partialOrInvalid(complete bool) lineKind {
	if complete {
		return lineInvalid
	}
	return linePartial
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }
func isSP(b byte) bool    { return b == ' ' }

// fieldText reports whether b holds only reason-phrase characters
// (HTAB, SP, VCHAR, obs-text).
func fieldText(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// headerEnd returns the length of the header block at the start of b (start
// line, fields and the empty line that ends them), or -1 when the empty line
// is not in b yet. from lets callers skip bytes already searched.
func headerEnd(b []byte, from int) int {
	for i := max(from, 0); i < len(b); i++ {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j
		// an empty line is "\n" or "\r\n" right after the previous '\n'
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 2
		}
		if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 3
		}
	}
	return -1
}

// knownMethods are the methods a request must use for the decoder to
// resync on it. net/http accepts any token, but after losing its place the
// decoder must not take the rest of a request line for a request: Go's
// server reads the first byte of the next request on its own, so "ET /
// HTTP/1.1" is a read the kernel ships. No suffix of these is another.
var knownMethods = []string{
	"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
	"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT", "QUERY",
}

// classifyResync is classifyStartLine restricted to known methods.
func classifyResync(b []byte) lineKind {
	k := classifyStartLine(b)
	if k != lineRequest && !(k == linePartial && !prefixMatch(b, "HTTP/")) {
		return k
	}
	method, complete := b, false
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		method, complete = b[:i], true
	}
	for _, m := range knownMethods {
		if complete && string(method) == m || !complete && prefixMatch(method, m) {
			return k
		}
	}
	return lineInvalid
}
