package http2

import (
	"strconv"
	"strings"

	"golang.org/x/net/http2/hpack"

	"github.com/sextant/sextant/flow"
)

const (
	maxHeaders     = 64   // non-pseudo headers kept per block
	maxHeaderValue = 1024 // bytes of one kept value
)

// headerSet is a decoded header block, sorted into what flows need.
// Secrets are dropped here, before anything else sees the block.
type headerSet struct {
	method, scheme, authority, path, status string
	contentType, grpcStatus, grpcMessage    string
	grpcTimeout, traceParent                string
	hasStatus, hasGRPCStatus                bool
	headers                                 []flow.Header
	// unknown counts fields that resolved to unknown HPACK state;
	// truncated says the block stopped decoding part way, or held more
	// headers than a flow keeps.
	unknown   int
	truncated bool
}

func parseFields(db decodedBlock, lists bool) *headerSet {
	h := &headerSet{truncated: db.truncated}
	if lists {
		// One allocation for the kept headers: at most every field,
		// pseudo headers (always a few) included.
		h.headers = make([]flow.Header, 0, min(len(db.fields), maxHeaders))
	}
	for _, f := range db.fields {
		if f.Name == unknownName {
			h.unknown++
			continue
		}
		h.add(f, lists)
	}
	return h
}

func (h *headerSet) add(f hpack.HeaderField, list bool) {
	switch f.Name {
	case ":method":
		h.method = f.Value
	case ":scheme":
		h.scheme = f.Value
	case ":authority":
		h.authority = f.Value
	case ":path":
		h.path = f.Value
	case ":status":
		h.status, h.hasStatus = f.Value, true
	}
	if strings.HasPrefix(f.Name, ":") {
		return
	}
	// Never-indexed fields were marked sensitive by their sender.
	if f.Sensitive || flow.IsSecret(f.Name) {
		return
	}
	switch f.Name {
	case "content-type":
		h.contentType = f.Value
	case "grpc-status":
		h.grpcStatus, h.hasGRPCStatus = f.Value, true
	case "grpc-message":
		h.grpcMessage = f.Value
	case "grpc-timeout":
		h.grpcTimeout = f.Value
	case "traceparent":
		h.traceParent = f.Value
	case "host":
		if h.authority == "" {
			h.authority = f.Value
		}
	}
	if !list {
		return
	}
	if len(h.headers) == maxHeaders {
		h.truncated = true
		return
	}
	fh := flow.Header{Name: f.Name, Value: f.Value}
	if len(fh.Value) > maxHeaderValue {
		fh.Value, fh.Truncated = fh.Value[:maxHeaderValue], true
	}
	h.headers = append(h.headers, fh)
}

// incomplete: some fields of the block could not be decoded.
func (h *headerSet) incomplete() bool { return h.unknown > 0 || h.truncated }

func (h *headerSet) isRequest() bool  { return h.method != "" }
func (h *headerSet) isResponse() bool { return h.hasStatus }

func (h *headerSet) informational() bool {
	return len(h.status) == 3 && h.status[0] == '1'
}

func (h *headerSet) isGRPC() bool {
	return strings.HasPrefix(h.contentType, "application/grpc")
}

// grpcTimeout parses the grpc-timeout header ("100m", "5S", …).
func parseGRPCTimeout(v string) (int64, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	unit := map[byte]int64{'H': 3600e9, 'M': 60e9, 'S': 1e9, 'm': 1e6, 'u': 1e3, 'n': 1}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	return n * unit, true
}
