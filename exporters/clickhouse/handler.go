package clickhouse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// QueryPath is where QueryHandler serves.
const QueryPath = "/v1/query"

// DefaultMaxRows caps the rows of one answer unless the request asks for
// fewer (or more, up to MaxRows).
const (
	DefaultMaxRows = 10000
	MaxRows        = 1000000
)

// QueryRequest is the body of POST /v1/query.
type QueryRequest struct {
	SQL     string `json:"sql"`
	MaxRows int    `json:"max_rows,omitempty"`
}

// QueryError is the body of a failed query (HTTP 400 when the statement
// is at fault, 503 when the store cannot be reached).
type QueryError struct {
	Error string `json:"error"`
}

// queryTimeout bounds one request; the store's QueryLimits bound the
// statement itself (60 s by default).
const queryTimeout = 2 * time.Minute

// maxRequestBytes bounds the body of one request: the statement (at most
// MaxSQLBytes) in JSON.
const maxRequestBytes = 4 * MaxSQLBytes

// QueryHandler serves POST /v1/query: one SQL statement run by the store's
// sandbox (Store.Query), answered as a Result in JSON. `sextant query` is
// its client. Refused statements get 400 with what was refused.
func QueryHandler(store Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+QueryPath, func(w http.ResponseWriter, r *http.Request) {
		var req QueryRequest
		body := http.MaxBytesReader(w, r.Body, maxRequestBytes)
		if err := json.NewDecoder(body).Decode(&req); err != nil {
			status := http.StatusBadRequest
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				status = http.StatusRequestEntityTooLarge
			}
			writeJSON(w, status, QueryError{fmt.Sprintf("request body: %v (want {\"sql\": \"…\"} of at most %d bytes)", err, maxRequestBytes)})
			return
		}
		if req.SQL == "" {
			writeJSON(w, http.StatusBadRequest, QueryError{"no sql"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
		defer cancel()
		res, err := store.Query(ctx, req.SQL, req.MaxRows)
		if err != nil {
			writeJSON(w, statusOf(store, err), QueryError{err.Error()})
			return
		}
		if res.Rows == nil {
			res.Rows = [][]any{}
		}
		writeJSON(w, http.StatusOK, res)
	})
	return mux
}

// statusOf tells a bad statement (400) from an unreachable store (503).
func statusOf(store Store, err error) int {
	var ex *clickhouse.Exception
	switch {
	case errors.Is(err, ErrNotReadOnly), errors.As(err, &ex), errors.As(err, new(*parseError)):
		return http.StatusBadRequest
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	if _, embedded := store.(*EmbeddedStore); embedded {
		return http.StatusBadRequest // in-process: every error is the statement's
	}
	return http.StatusServiceUnavailable
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
