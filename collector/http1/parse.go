package http1

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"github.com/sextant/sextant/flow"
)

// framing says how the body of a message is delimited.
type framing struct {
	chunked bool
	length  int64 // body bytes when !chunked; -1: until the connection closes
}

// head is one parsed header block.
type head struct {
	request bool

	// request line
	method, target, path, scheme, host string
	// status line
	status int

	proto   string
	headers []flow.Header // secrets removed
	trace   string        // traceparent
	hasHost bool
	framing framing
}

// parser runs net/http over header blocks. It is reused to keep the
// per-message allocations to what net/http itself makes.
type parser struct {
	rd     bytes.Reader
	br     *bufio.Reader
	secret map[string]bool
}

func newParser(secretHeaders []string) *parser {
	p := &parser{secret: map[string]bool{}} // on top of flow.IsSecret
	for _, name := range secretHeaders {
		p.secret[strings.ToLower(name)] = true
	}
	p.br = bufio.NewReaderSize(&p.rd, 4096)
	return p
}

func (p *parser) reader(block []byte) *bufio.Reader {
	p.rd.Reset(block)
	p.br.Reset(&p.rd)
	return p.br
}

// parseRequest parses a complete request header block. net/http validates
// the request line and decides the body framing the way a Go server would;
// a second textproto pass keeps the fields as sent, because ReadRequest
// removes some (Host, Transfer-Encoding, Trailer) while deciding framing.
func (p *parser) parseRequest(block []byte) (*head, error) {
	req, err := http.ReadRequest(p.reader(block))
	if err != nil {
		return nil, fmt.Errorf("read request: %w", err)
	}
	if req.ProtoMajor != 1 {
		return nil, fmt.Errorf("read request: protocol %q is not HTTP/1.x", req.Proto)
	}
	h := &head{
		request: true,
		method:  req.Method,
		target:  req.RequestURI,
		path:    req.RequestURI,
		host:    req.Host,
		proto:   req.Proto,
	}
	if req.URL != nil && req.URL.IsAbs() {
		// absolute-form (to a proxy): split it like HTTP/2's pseudo-headers
		h.scheme = req.URL.Scheme
		h.path = req.URL.RequestURI()
	}
	if req.Method == http.MethodConnect {
		h.path = "" // authority-form: the target is the authority
	}
	switch {
	case chunked(req.TransferEncoding):
		h.framing = framing{chunked: true}
	case req.ContentLength > 0:
		h.framing = framing{length: req.ContentLength}
	}
	if err := p.exportHeaders(h, block); err != nil {
		return nil, err
	}
	return h, nil
}

// parseResponse parses a complete response header block; method is the
// request's (responses to HEAD have no body), "" when unknown.
func (p *parser) parseResponse(block []byte, method string) (*head, error) {
	var req *http.Request
	if method != "" {
		req = &http.Request{Method: method}
	}
	resp, err := http.ReadResponse(p.reader(block), req)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if resp.ProtoMajor != 1 {
		return nil, fmt.Errorf("read response: protocol %q is not HTTP/1.x", resp.Proto)
	}
	h := &head{status: resp.StatusCode, proto: resp.Proto}
	switch {
	case method == http.MethodHead, resp.StatusCode/100 == 1,
		resp.StatusCode == http.StatusNoContent, resp.StatusCode == http.StatusNotModified:
		h.framing = framing{}
	case chunked(resp.TransferEncoding):
		h.framing = framing{chunked: true}
	default:
		h.framing = framing{length: resp.ContentLength} // -1: until close
	}
	if err := p.exportHeaders(h, block); err != nil {
		return nil, err
	}
	return h, nil
}

func chunked(te []string) bool { return len(te) > 0 && te[0] == "chunked" }

// exportHeaders reads the fields of block as sent and keeps the ones that
// may leave the node. Names are lower-cased (as in HTTP/2) and sorted,
// because the MIME header map does not keep the wire order.
func (p *parser) exportHeaders(h *head, block []byte) error {
	tp := textproto.NewReader(p.reader(block))
	if _, err := tp.ReadLine(); err != nil {
		return fmt.Errorf("read start line: %w", err)
	}
	fields, err := tp.ReadMIMEHeader()
	if err != nil {
		return fmt.Errorf("read header fields: %w", err)
	}
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		lower := strings.ToLower(name)
		values := fields[name]
		switch {
		case flow.IsSecret(lower) || p.secret[lower]:
			continue
		case lower == "host":
			h.hasHost = true
		case lower == "traceparent" && h.trace == "":
			h.trace = values[0]
		}
		for _, v := range values {
			h.headers = append(h.headers, flow.Header{Name: lower, Value: v})
		}
	}
	return nil
}

// parseTruncated parses the exact part of a header block that was cut
// short: the start line and the fields whose line was completely shipped.
// The last complete field is dropped when the next byte is not visible or
// starts a continuation line (obs-fold), since its value may go on.
func (p *parser) parseTruncated(partial []byte, method string) (*head, error) {
	nl := bytes.IndexByte(partial, '\n')
	if nl < 0 {
		return nil, fmt.Errorf("truncated before the end of the start line")
	}
	fields := partial[:nl+1]
	if last := bytes.LastIndexByte(partial, '\n'); last > nl {
		rest := partial[last+1:]
		end := last + 1
		if len(rest) == 0 || rest[0] == ' ' || rest[0] == '\t' {
			end = bytes.LastIndexByte(partial[:last], '\n') + 1
		}
		fields = partial[:max(end, nl+1)]
	}
	block := make([]byte, 0, len(fields)+2)
	block = append(append(block, fields...), "\r\n"...)
	startOnly := append(append([]byte(nil), partial[:nl+1]...), "\r\n"...)

	parse := func(b []byte) (*head, error) {
		if classifyStartLine(b) == lineRequest {
			return p.parseRequest(b)
		}
		return p.parseResponse(b, method)
	}
	h, err := parse(block)
	if err != nil {
		// a field net/http rejects (e.g. conflicting framing) still
		// leaves the start line exact
		h, err = parse(startOnly)
	}
	return h, err
}
