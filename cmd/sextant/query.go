package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sextant/sextant/certs"
	"github.com/sextant/sextant/exporters/clickhouse"
	"github.com/sextant/sextant/relay"
)

func newQueryCmd() *cobra.Command {
	var (
		relayAddr = "unix://" + relay.DefaultQuerySocket
		tlsFiles  certs.Files
		output    = "table"
		maxRows   int
		timeout   = 2 * time.Minute
	)
	cmd := &cobra.Command{
		Use:   "query SQL",
		Short: "Run SQL over the flow history kept by the relay",
		Long: `Run one read-only SQL statement against the flow history of the relay:
the ClickHouse server it writes to, or its embedded engine. The table is
'flows' (columns in docs/clickhouse.md; useful queries in docs/queries.md).`,
		Example: `  sextant query "SELECT service, count() FROM flows WHERE time > now() - INTERVAL 1 HOUR GROUP BY service"
  sextant query -o json "SELECT * FROM flows WHERE trace_id = '4bf92f3577b34da6a3ce929d0e0e4736'"`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return usageErrorf("-o %q: want table or json", output)
			}
			res, err := runQuery(cmd, relayAddr, tlsFiles, args[0], maxRows, timeout)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			return printResult(cmd.OutOrStdout(), res)
		},
	}
	f := cmd.Flags()
	f.StringVar(&relayAddr, "relay", relayAddr, "query endpoint of the relay: unix:///path, or host:port over mTLS (with --tls-*)")
	f.StringVar(&tlsFiles.Cert, "tls-cert", "", "client certificate (PEM) for a TCP query endpoint (mTLS)")
	f.StringVar(&tlsFiles.Key, "tls-key", "", "key of --tls-cert (PEM)")
	f.StringVar(&tlsFiles.CA, "tls-ca", "", "CA (PEM) that signs the relay's certificate")
	f.StringVarP(&output, "output", "o", output, "output format: table or json")
	f.IntVar(&maxRows, "max-rows", clickhouse.DefaultMaxRows, "rows to return at most")
	f.DurationVar(&timeout, "timeout", timeout, "give up after this long")
	return cmd
}

func runQuery(cmd *cobra.Command, relayAddr string, files certs.Files, sql string, maxRows int, timeout time.Duration) (*clickhouse.Result, error) {
	client, base, err := queryClient(relayAddr, files, timeout)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(clickhouse.QueryRequest{SQL: sql, MaxRows: maxRows})
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, base+clickhouse.QueryPath, bytes.NewReader(body))
	if err != nil {
		return nil, usageErrorf("--relay %q: %v", relayAddr, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, explainQueryError(relayAddr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return nil, fmt.Errorf("relay %s: %w", relayAddr, err)
	}
	if resp.StatusCode != http.StatusOK {
		var qe clickhouse.QueryError
		if json.Unmarshal(data, &qe) == nil && qe.Error != "" {
			return nil, errors.New(qe.Error)
		}
		return nil, fmt.Errorf("relay %s: %s: %s", relayAddr, resp.Status, strings.TrimSpace(string(data)))
	}
	var res clickhouse.Result
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // 64-bit integers stay exact
	if err := dec.Decode(&res); err != nil {
		return nil, fmt.Errorf("relay %s: answer: %w", relayAddr, err)
	}
	return &res, nil
}

// printResult prints an aligned table: a header of column names, one line
// per row, then the row count.
func printResult(w io.Writer, res *clickhouse.Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	names := make([]string, len(res.Columns))
	for i, c := range res.Columns {
		names[i] = c.Name
	}
	if len(names) > 0 {
		fmt.Fprintln(tw, strings.Join(names, "\t"))
	}
	for _, r := range res.Rows {
		cells := make([]string, len(r))
		for i, v := range r {
			cells[i] = cell(v)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	more := ""
	if res.Truncated {
		more = " (truncated: raise --max-rows or add LIMIT)"
	}
	_, err := fmt.Fprintf(w, "%d rows%s\n", len(res.Rows), more)
	return err
}

// cell renders one value on one line: strings as they are (tabs and
// newlines escaped), NULL for null, JSON for arrays and maps.
func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return strings.NewReplacer("\t", `\t`, "\n", `\n`, "\r", `\r`).Replace(x)
	case json.Number:
		return x.String()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// queryClient reaches the query endpoint: HTTP over the relay's unix
// socket, or HTTPS with a client certificate over TCP.
func queryClient(addr string, files certs.Files, timeout time.Duration) (*http.Client, string, error) {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}
		return &http.Client{Transport: tr, Timeout: timeout}, "http://relay", nil
	}
	host := strings.TrimPrefix(addr, "https://")
	if files.Empty() {
		if def := certs.ClientFiles(certs.DefaultDir); def.Exist() {
			files = def
		}
	}
	tc, err := certs.ClientConfig(files, "")
	if err != nil {
		return nil, "", usageErrorf("--relay %s over TCP needs mTLS: %v", addr, err)
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		tc.ServerName = h
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: timeout}, "https://" + host, nil
}

// explainQueryError says what to do about a failed connection.
func explainQueryError(addr string, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "permission denied"):
		return fmt.Errorf("permission denied: %s belongs to the relay's user (run as root, or start the relay with --socket-group)", strings.TrimPrefix(addr, "unix://"))
	case strings.Contains(msg, "no such file") || strings.Contains(msg, "connection refused"):
		return fmt.Errorf("no relay answers queries at %s (is 'sextant relay' running with a flow store?)", addr)
	}
	return fmt.Errorf("relay %s: %w", addr, err)
}
