package dashboards

// The Flow history queries on the ClickHouse 18.16 server (Debian's
// package), over the legacy table the exporter creates there.

import (
	"testing"
	"time"

	"github.com/sextant/sextant/exporters/clickhouse"
	"github.com/sextant/sextant/testbed"
)

func TestFlowHistorySQLServer1816(t *testing.T) {
	srv := testbed.StartClickHouse(t)
	store, err := clickhouse.OpenNative(clickhouse.NativeConfig{Addr: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	t0 := time.Now().Add(-20 * time.Minute).Truncate(time.Minute)
	writeFlows(t, store, knownFlows(t0))
	checkFlowHistory(t, store, t0, false)
}
