package http2

import (
	"bytes"
	"fmt"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// encodeBlock is one header block of enc holding fields.
func encodeBlock(t testing.TB, enc *hpack.Encoder, buf *bytes.Buffer, fields ...hpack.HeaderField) []byte {
	t.Helper()
	buf.Reset()
	for _, f := range fields {
		if err := enc.WriteField(f); err != nil {
			t.Fatal(err)
		}
	}
	return bytes.Clone(buf.Bytes())
}

func numbered(i int) hpack.HeaderField {
	return hpack.HeaderField{Name: fmt.Sprintf("x-%d", i), Value: fmt.Sprintf("v-%d", i)}
}

// After a reset, a reference to any entry the encoder's table still holds
// resolves to a placeholder (unknown), never fails and never resolves to a
// wrong field, also when the encoder's table was grown by a size update:
// the placeholders reach as deep as the largest size signalled.
func TestResetReachesTheEncodersTable(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tableSize uint32 // the encoder's, 0: HPACK's initial 4096
		inserted  int    // distinct fields inserted before the reset
	}{
		{"initial table", 0, 90},
		{"grown to 64 KiB", 64 << 10, 1500},
		{"grown to 128 KiB", 128 << 10, 2800}, // deeper than a table of unknown size is filled
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			enc := hpack.NewEncoder(&buf)
			if tc.tableSize != 0 {
				enc.SetMaxDynamicTableSizeLimit(tc.tableSize)
				enc.SetMaxDynamicTableSize(tc.tableSize)
			}
			d := newBlockDecoder(false)
			for i := range tc.inserted {
				if db := d.decode(encodeBlock(t, enc, &buf, numbered(i))); db.truncated || len(db.fields) != 1 || db.fields[0] != numbered(i) {
					t.Fatalf("block %d before the reset: %+v", i, db)
				}
			}
			d.resetUnknown() // records were lost here
			// The oldest entry the encoder still holds, then a new one.
			oldest := numbered(0)
			block := encodeBlock(t, enc, &buf, oldest, numbered(tc.inserted))
			if block[0]&0x80 == 0 { // not an indexed field
				t.Fatalf("the encoder no longer references %v (block % x): the test's table is too full", oldest, block)
			}
			db := d.decode(block)
			if db.truncated {
				t.Fatalf("a reference into the encoder's table failed to decode after the reset (%d placeholders)", d.placeholders())
			}
			if len(db.fields) != 2 || db.fields[0].Name != unknownName || db.fields[1] != numbered(tc.inserted) {
				t.Fatalf("after the reset: %+v, want the unknown placeholder then %v", db.fields, numbered(tc.inserted))
			}
		})
	}
}

func TestLeadingSizeUpdate(t *testing.T) {
	for _, tc := range []struct {
		block []byte
		size  uint64
		ok    bool
	}{
		{nil, 0, false},
		{[]byte{0x82}, 0, false},                            // an indexed field first
		{[]byte{0x20, 0x82}, 0, true},                       // size 0
		{[]byte{0x3e}, 30, true},                            // fits the prefix
		{[]byte{0x3f, 0xe1, 0x1f}, 4096, true},              // 31 + 4065
		{[]byte{0x20, 0x3f, 0xe1, 0xff, 0x03}, 65536, true}, // two updates: the largest
		{[]byte{0x3f, 0xe1}, 0, false},                      // truncated
	} {
		size, ok := leadingSizeUpdate(tc.block)
		if size != tc.size || ok != tc.ok {
			t.Errorf("leadingSizeUpdate(% x) = %d, %v; want %d, %v", tc.block, size, ok, tc.size, tc.ok)
		}
	}
}

// BenchmarkResetUnknown: the cost of one reset (records lost on a
// direction), for an encoder at HPACK's initial table size and for one of
// unknown size (joined midway).
func BenchmarkResetUnknown(b *testing.B) {
	for _, midway := range []bool{false, true} {
		b.Run(fmt.Sprintf("joinedMidway=%v", midway), func(b *testing.B) {
			d := newBlockDecoder(midway)
			b.ReportAllocs()
			for b.Loop() {
				d.resetUnknown()
			}
		})
	}
}
