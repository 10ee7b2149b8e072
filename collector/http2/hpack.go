package http2

import (
	"golang.org/x/net/http2/hpack"
)

// unknownName marks a dynamic-table entry whose content we never saw. It is
// not a valid header name token, so it cannot collide with a real field.
const unknownName = "?"

const (
	// initialTableSize is HPACK's table size before any SETTINGS (RFC 7541 §4.2).
	initialTableSize = 4096
	// maxTableSize bounds what a size update may ask for. We are a passive
	// observer: the peer already accepted the encoder's choice, so trust it
	// up to a size that bounds our memory.
	maxTableSize = 1 << 17
	// placeholders fill a table of unknown content: enough entries that any
	// index a 64 KiB table can hold lands on one (64 KiB / 32 B per entry).
	placeholders = 2048
)

// placeholderBlock inserts `placeholders` entries named unknownName
// (literal with incremental indexing, new name, empty value).
var placeholderBlock = func() []byte {
	b := make([]byte, 0, placeholders*4)
	for range placeholders {
		b = append(b, 0x40, 0x01, unknownName[0], 0x00)
	}
	return b
}()

// blockDecoder is the HPACK decoding state of one direction of a connection.
//
// When the agent joins a connection mid-way, or loses records, the dynamic
// table's content is unknown. Rather than give up, the table is filled with
// placeholders: the encoder only references entries that exist, entries are
// ordered newest first, and every entry inserted after the reset is known,
// so a reference either resolves to a field we saw inserted (exact) or to a
// placeholder (reported unknown) — never to a wrong field. The state heals by
// itself as the encoder's table turns over.
type blockDecoder struct {
	dec     *hpack.Decoder
	fields  []hpack.HeaderField
	partial bool // placeholders may still be referenced
}

func newBlockDecoder(joinedMidway bool) *blockDecoder {
	d := &blockDecoder{}
	if joinedMidway {
		d.resetUnknown()
	} else {
		d.dec = hpack.NewDecoder(initialTableSize, d.emit)
		d.dec.SetAllowedMaxDynamicTableSize(maxTableSize)
	}
	return d
}

func (d *blockDecoder) emit(f hpack.HeaderField) { d.fields = append(d.fields, f) }

// resetUnknown forgets the dynamic table: every old index becomes unknown.
func (d *blockDecoder) resetUnknown() {
	d.dec = hpack.NewDecoder(maxTableSize, d.emit)
	d.dec.SetAllowedMaxDynamicTableSize(maxTableSize)
	d.dec.SetEmitEnabled(false)
	if _, err := d.dec.Write(placeholderBlock); err != nil {
		panic("hpack placeholder block: " + err.Error()) // a constant input: cannot fail
	}
	d.dec.SetEmitEnabled(true)
	d.partial = true
}

// decodedBlock is one decoded header block.
type decodedBlock struct {
	fields []hpack.HeaderField
	// truncated: decoding stopped at an error; fields holds what came before
	// it (exact), the rest of the block is unknown.
	truncated bool
}

// decode decodes one complete header block. Fields that resolved to a
// placeholder keep unknownName as name (or value) so callers can tell.
func (d *blockDecoder) decode(block []byte) decodedBlock {
	d.fields = d.fields[:0]
	_, err := d.dec.Write(block)
	if err == nil {
		err = d.dec.Close()
	}
	// The fields are the decoder's own slice, valid until the next block:
	// parseFields copies what it keeps, so no copy per block here.
	out := decodedBlock{fields: d.fields}
	if err != nil {
		// Inserts after the failure point were not applied: the table no
		// longer matches the encoder's.
		out.truncated = true
		d.resetUnknown()
	}
	return out
}
