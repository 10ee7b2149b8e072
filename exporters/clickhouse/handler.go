package clickhouse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// queryTimeout bounds one query.
const queryTimeout = 2 * time.Minute

// QueryHandler serves POST /v1/query on the relay's admin listener: one
// read-only SQL statement against the store, answered as a Result in JSON.
// `sextant query` is its client.
func QueryHandler(store Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+QueryPath, func(w http.ResponseWriter, r *http.Request) {
		var req QueryRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, QueryError{fmt.Sprintf("request body: %v (want {\"sql\": \"…\"})", err)})
			return
		}
		if req.SQL == "" {
			writeJSON(w, http.StatusBadRequest, QueryError{"no sql"})
			return
		}
		limit := req.MaxRows
		if limit <= 0 {
			limit = DefaultMaxRows
		}
		limit = min(limit, MaxRows)
		ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
		defer cancel()
		res, err := store.Query(ctx, req.SQL)
		if err != nil {
			writeJSON(w, statusOf(store, err), QueryError{err.Error()})
			return
		}
		if len(res.Rows) > limit {
			res.Rows, res.Truncated = res.Rows[:limit], true
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
	case errors.Is(err, ErrNotReadOnly), errors.As(err, &ex):
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
